"""The shared gRPC client against the real local server serving the slow test servable."""

from __future__ import annotations

import json
import signal
import time

import pytest

from client.ovms_client import (
    EndSignal,
    GenerationSettings,
    Grounding,
    OvmsClient,
    Sources,
    StreamError,
    TextPiece,
    build_request,
    parse_output,
)
from tests.client.conftest import GROUNDED_ANSWER, GROUNDED_QUESTION, SLOW_CONFIG, WORD_DELAY_S

QUESTION = [{"role": "user", "content": "How do I set it up?"}]
DEFAULTS = GenerationSettings()


def collect(
    client: OvmsClient, messages: list[dict], settings: GenerationSettings = DEFAULTS
) -> list[tuple[float, object]]:
    """(arrival time, event) for every event of one answer."""
    return [(time.monotonic(), event) for event in client.ask(messages, settings)]


def test_answer_streams_sources_then_pieces_then_end_signal(slow_server):
    client = OvmsClient(slow_server.grpc_url)
    timed = collect(client, QUESTION)
    events = [event for _, event in timed]

    assert isinstance(events[0], Sources)
    assert [s.document for s in events[0].items] == ["guide/setup.md", "https://example.com/faq"]
    assert events[0].items[0].score == 0.91
    assert events[0].items[0].snippet == "About: How do I set it up?"
    assert events[0].items[0].text == "About: How do I set it up? The HT-7 flies 47 minutes on one battery."
    pieces = events[1:-1]
    assert all(isinstance(e, TextPiece) for e in pieces)
    assert "".join(p.text for p in pieces) == "[turn 1] " + " ".join(f"word{i}" for i in range(1, 13))
    end = events[-1]
    assert isinstance(end, EndSignal)
    assert end.finish_reason == "length" and end.generated_tokens == 12
    assert end.ttft_ms > 0 and end.tokens_per_s > 0
    assert end.grounding is None  # the servable did not check this answer
    # Token by token: the pieces arrive spread over the answer, not all at once at the end.
    piece_times = [t for t, e in timed if isinstance(e, TextPiece)]
    assert piece_times[-1] - piece_times[0] > 0.5 * 11 * WORD_DELAY_S


def test_plain_question_goes_as_plain_text_and_the_rest_as_json(slow_server):
    client = OvmsClient(slow_server.grpc_url)
    collect(client, QUESTION)
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "And now?"},
    ]
    events = [e for _, e in collect(client, history, GenerationSettings(max_new_tokens=3, use_rag=False))]

    plain, structured = slow_server.log.requests()
    assert plain == {"messages": QUESTION, "format": "plain"}
    assert structured == {"messages": history, "max_new_tokens": 3, "use_rag": False, "format": "json"}
    assert events[0] == Sources(())
    assert "".join(e.text for e in events if isinstance(e, TextPiece)) == "[turn 2] word1 word2 word3"


def test_grounding_of_the_answer_comes_with_the_end_signal(slow_server):
    events = [
        e
        for _, e in collect(
            OvmsClient(slow_server.grpc_url), [{"role": "user", "content": GROUNDED_QUESTION}]
        )
    ]

    assert "".join(e.text for e in events if isinstance(e, TextPiece)) == GROUNDED_ANSWER
    end = events[-1]
    assert isinstance(end, EndSignal) and end.finish_reason == "stop"
    assert end.grounding == Grounding(5, ("1,200", "1,200", "Lima"), (1,), False)
    assert end.grounding.missing == ("1,200", "Lima")


END = {"finish_reason": "stop", "generated_tokens": 9}


@pytest.mark.parametrize(
    "grounding",
    [
        "not an object",
        {"unsupported": [], "citations": [], "refused": False},
        {"facts": "2", "unsupported": [], "citations": [], "refused": False},
        {"facts": True, "unsupported": [], "citations": [], "refused": False},
        {"facts": 2, "unsupported": "1,200", "citations": [], "refused": False},
        {"facts": 2, "unsupported": [1200], "citations": [], "refused": False},
        {"facts": 2, "unsupported": [""], "citations": [], "refused": False},
        {"facts": 2, "unsupported": [], "citations": [0], "refused": False},
        {"facts": 2, "unsupported": [], "citations": ["1"], "refused": False},
        {"facts": 2, "unsupported": [], "citations": [], "refused": "no"},
        None,
    ],
)
def test_malformed_or_absent_grounding_is_none_and_the_end_signal_stands(grounding):
    end = parse_output("end_signal", json.dumps({**END, "grounding": grounding}).encode())
    assert end == EndSignal("stop", generated_tokens=9)


def test_grounding_is_read_and_unknown_fields_in_it_ignored():
    grounding = {"facts": 2, "unsupported": ["Lima"], "citations": [2], "refused": True, "new": 1}
    end = parse_output("end_signal", json.dumps({**END, "grounding": grounding}).encode())
    assert end.grounding == Grounding(2, ("Lima",), (2,), True)


def test_a_source_without_text_has_an_empty_one():
    sources = parse_output("sources", b'[{"document": "a.md", "title": "A", "snippet": "S", "score": 0.5}]')
    assert sources.items[0].text == "" and sources.items[0].snippet == "S"


def test_a_question_that_looks_like_json_is_wrapped_in_the_json_request():
    text = build_request([{"role": "user", "content": '{"not": "a request"}'}])
    assert text.startswith('{"messages": [{"role": "user", "content": "{\\"not\\"')


def test_cancel_stops_the_generation_in_the_server(slow_server):
    client = OvmsClient(slow_server.grpc_url)
    stream = client.ask(QUESTION, GenerationSettings(max_new_tokens=400))
    received = []
    for event in stream:
        received.append(event)
        if sum(isinstance(e, TextPiece) for e in received) == 3:
            stream.cancel()
    assert stream.cancelled
    assert not any(isinstance(e, EndSignal | StreamError) for e in received)
    cancelled = slow_server.log.wait_for_cancellations()
    assert len(cancelled) == 1
    assert cancelled[0]["question"] == QUESTION[0]["content"]
    assert cancelled[0]["words_sent"] < 400


def test_leaving_an_answer_early_cancels_it_in_the_server(slow_server):
    client = OvmsClient(slow_server.grpc_url)
    events = iter(client.ask(QUESTION, GenerationSettings(max_new_tokens=400)))
    assert isinstance(next(events), Sources)
    assert isinstance(next(events), TextPiece)
    events.close()
    assert len(slow_server.log.wait_for_cancellations()) == 1


def test_server_error_before_the_answer_is_a_plain_message(slow_server):
    client = OvmsClient(slow_server.grpc_url)
    events = [e for _, e in collect(client, [{"role": "user", "content": "please fail"}])]
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert not events[0].unreachable
    assert "asked to fail" in events[0].message and "Traceback" not in events[0].message
    # The server keeps serving.
    assert isinstance(collect(client, QUESTION)[-1][1], EndSignal)


def test_failure_in_the_middle_of_an_answer_is_a_plain_message(slow_server):
    client = OvmsClient(slow_server.grpc_url)
    events = [e for _, e in collect(client, [{"role": "user", "content": "fail midway"}])]
    assert [type(e) for e in events] == [Sources, TextPiece, TextPiece, TextPiece, StreamError]
    assert "failed in the middle" in events[-1].message and "Traceback" not in events[-1].message


def test_status_reports_server_and_graph_readiness(slow_server):
    status = OvmsClient(slow_server.grpc_url).status()
    assert status.live and status.model_ready
    missing = OvmsClient(slow_server.grpc_url, model_name="no_such_graph").status()
    assert missing.live and not missing.model_ready
    assert "no_such_graph" in missing.message


def test_unreachable_server_is_a_plain_message_and_the_next_question_works_once_it_is_back(
    unused_port, ovms_server, tmp_path
):
    client = OvmsClient(f"127.0.0.1:{unused_port}")
    status = client.status()
    assert not status.live and "not reachable" in status.message
    events = list(client.ask(QUESTION))
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert events[0].unreachable and "not reachable" in events[0].message

    ovms_server(SLOW_CONFIG, env={"CLIENT_TEST_LOG_DIR": str(tmp_path)}, args=["--port", str(unused_port)])
    assert client.status().model_ready
    assert isinstance(list(client.ask(QUESTION))[-1], EndSignal)


def test_graph_that_is_not_ready_is_a_plain_message(ovms_server, tmp_path):
    env = {"CLIENT_TEST_LOG_DIR": str(tmp_path), "CLIENT_TEST_FAIL_INITIALIZE": "1"}
    client = OvmsClient(ovms_server(SLOW_CONFIG, env=env).grpc_url)
    status = client.status()
    assert status.live and not status.model_ready and "not ready" in status.message
    events = list(client.ask(QUESTION))
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert "'python_model' is not ready" in events[0].message and not events[0].unreachable


def test_server_dying_in_the_middle_of_an_answer_is_a_plain_message(ovms_server, tmp_path):
    server = ovms_server(SLOW_CONFIG, env={"CLIENT_TEST_LOG_DIR": str(tmp_path)})
    events = []
    for event in OvmsClient(server.grpc_url).ask(QUESTION, GenerationSettings(max_new_tokens=400)):
        events.append(event)
        if len(events) == 3:
            server.stop(signal.SIGKILL)
    assert isinstance(events[-1], StreamError) and events[-1].unreachable
    assert events[-1].message == "The connection to the server was lost during the answer."
