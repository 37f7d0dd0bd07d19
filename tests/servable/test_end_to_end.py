"""The real servable through the real local server and tritonclient: streaming, sources, live docs.txt
reload, failing URLs, cancel, and bad input. One server for the module (default models)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import LIVENESS_S
from tests.servable.rag import ServableCopy, Stream, ask, metrics, model_ready, require_models, wait_for

pytestmark = pytest.mark.slow

MAX_CONTEXT = 1024
MAX_NEW = 32
DOCS = {
    "notes/bluefin.md": "# Project Bluefin\nThe launch code of Project Bluefin is TANGERINE-4471. "
    "The night shift chose it in April.",
    "notes/garden.txt": "The community garden grows twelve kinds of kale. It opens on Saturdays at nine.",
    "notes/trains.html": "<html><head><title>Train timetable</title></head><body><p>The Oslo express "
    "departs from platform 7 at 14:05.</p></body></html>",
    "later/orchid.md": "# Orchid house\nThe orchid house keeper is Bartholomew Finch. "
    "He waters the orchids at dawn.",
}
ENTRIES = ["notes/"]
END_FIELDS = (
    "finish_reason", "prompt_tokens", "generated_tokens", "ttft_ms", "tokens_per_s", "retrieval_ms",
    "grounding", "lookup",
)  # fmt: skip


@pytest.fixture(scope="module")
def copy(tmp_path_factory, site) -> ServableCopy:
    require_models()
    site.route("/slow.txt", b"too late", delay=4.0, Content_Type="text/plain")
    entries = [*ENTRIES, site.url("/missing.txt"), site.url("/slow.txt")]
    return ServableCopy.make(tmp_path_factory.mktemp("e2e") / "servable_stream", DOCS, entries)


@pytest.fixture(scope="module")
def server(copy, ovms_server_module, site):
    env = {
        "MAX_CONTEXT_TOKENS": str(MAX_CONTEXT),
        "MAX_NEW_TOKENS": str(MAX_NEW),
        "CHUNK_SIZE": "400",
        "CHUNK_OVERLAP": "40",
        "DOCS_WATCH_DEBOUNCE_S": "0.2",
        "DOCS_POLL_INTERVAL_S": "1",
        "FETCH_TIMEOUT_S": "1",
        "RELEVANCE_THRESHOLD": "0.3",
        "PROMPT_LOOKUP": "1",
    }
    return ovms_server_module(copy.config, env=env)


def test_plain_question_streams_sources_pieces_and_end_signal(server):
    answer = ask(server.grpc_url, "When does the community garden open?")
    assert answer.error is None
    assert answer.order[0] == "sources" and answer.order[-1] == "end_signal"
    assert set(answer.order[1:-1]) == {"completion"} and answer.text.strip()
    assert answer.sources[0]["document"] == "notes/garden.txt"
    assert answer.end["finish_reason"] in ("stop", "length")
    assert 1 <= answer.end["generated_tokens"] <= MAX_NEW
    assert answer.end["prompt_tokens"] > 0 and answer.end["ttft_ms"] > 0 and answer.end["retrieval_ms"] > 0
    assert set(answer.end) == set(END_FIELDS)
    # Prompt lookup (on here): each step after the first verified `assistant_tokens` proposals and
    # gave the accepted ones and one more; /metrics adds them up.
    lookup = answer.end["lookup"]
    steps = lookup["proposed_tokens"] // lookup["assistant_tokens"]
    assert answer.end["generated_tokens"] == 1 + steps + lookup["accepted_tokens"]
    assert 0 <= lookup["accepted_tokens"] <= lookup["proposed_tokens"]
    values = metrics(server)
    assert values["rag_llm_lookup_proposed_tokens_total"] >= lookup["proposed_tokens"]
    assert values["rag_llm_lookup_accepted_tokens_total"] >= lookup["accepted_tokens"]


def test_answer_copies_a_passage_and_cites_it(server):
    """The offline model answers in extract mode (models.json): whatever it picks is one of the
    passages sent as sources, cited by its number, so grounding finds nothing unsupported."""
    answer = ask(
        server.grpc_url, {"question": "What is the launch code of Project Bluefin?", "max_new_tokens": 128}
    )
    assert answer.error is None and answer.end["finish_reason"] == "stop"
    choices = [f"{source['text']} [{n}]" for n, source in enumerate(answer.sources, start=1)]
    assert answer.text in choices
    cited = int(answer.text.rsplit("[", 1)[1].rstrip("]"))
    assert answer.end["grounding"] == {
        "facts": answer.end["grounding"]["facts"],
        "unsupported": [],
        "citations": [cited],
        "refused": False,
    }
    assert all(
        len(source["snippet"]) <= 300 and source["text"].startswith(source["snippet"])
        for source in answer.sources
    )


def test_question_no_passage_is_relevant_to_gets_the_refusal(server):
    answer = ask(server.grpc_url, "Quelle est la couleur du cheval blanc d'Henri IV ?")
    assert answer.error is None and answer.sources == [] and answer.text == "The documents do not say."
    assert answer.end["generated_tokens"] == 0 and answer.end["finish_reason"] == "stop"
    assert answer.end["grounding"]["refused"] is True


def test_serialized_bytes_and_json_requests(server):
    answer = ask(server.grpc_url, "Which platform does the Oslo express leave from?", serialized=True)
    assert answer.error is None and answer.sources[0]["document"] == "notes/trains.html"
    assert answer.sources[0]["title"] == "Train timetable"
    request = {
        "messages": [
            {"role": "user", "content": "Say hello."},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Say it again."},
        ],
        "use_rag": False,
        "max_new_tokens": 5,
        "ignore_eos": True,
    }
    answer = ask(server.grpc_url, request)
    assert answer.error is None and answer.sources == []
    assert answer.end["generated_tokens"] == 5 and answer.end["finish_reason"] == "length"


def test_sources_name_the_document_with_the_planted_fact(server):
    answer = ask(server.grpc_url, "What is the launch code of Project Bluefin?")
    assert answer.error is None
    top = answer.sources[0]
    assert top["document"] == "notes/bluefin.md" and top["title"] == "Project Bluefin"
    assert "TANGERINE-4471" in top["snippet"] and len(top["snippet"]) <= 300
    assert all(top["score"] >= s["score"] for s in answer.sources) and 0 < top["score"] <= 1
    texts = [s["text"] for s in answer.sources]
    assert len(set(texts)) == len(texts)  # no passage twice, though the index holds each chunk once


def test_failing_urls_are_reported_and_the_rest_indexed(server, copy, site):
    status = copy.status()
    failures = {f["document"]: f["reason"] for f in status["failures"]}
    assert failures[site.url("/missing.txt")] == "HTTP 404 Not Found"
    assert "took longer than 1.0 s (FETCH_TIMEOUT_S)" in failures[site.url("/slow.txt")]
    assert status["document_count"] == 3 and status["state"] == "ready"
    values = metrics(server)
    assert values["rag_index_documents"] == 3 and values["rag_index_failed_documents"] == 2


def index_status(server) -> dict:
    """The index status through the graph, as a user asks for it: `{"status": true}` over KServe."""
    answer = ask(server.grpc_url, {"status": True})
    assert answer.error is None and answer.order == ["status", "end_signal"], answer
    return answer.status


def test_the_index_status_comes_through_the_graph(server, copy, site):
    status = index_status(server)
    states = {
        d["document"]: (d["state"], d["chunks"] > 0, bool(d["indexed_at"])) for d in status["documents"]
    }
    assert states == {
        "notes/garden.txt": ("indexed", True, True),
        "notes/bluefin.md": ("indexed", True, True),
        "notes/trains.html": ("indexed", True, True),
        site.url("/missing.txt"): ("failed", False, False),
        site.url("/slow.txt"): ("failed", False, False),
    }
    reasons = {d["document"]: d.get("reason") for d in status["documents"]}
    assert reasons[site.url("/missing.txt")] == "HTTP 404 Not Found"
    assert status["building"] is None and status["state"] == "ready"
    assert status["chunks"] == sum(d["chunks"] for d in status["documents"])

    # An edit of docs.txt asks its URLs again: the slow one holds the rebuild for FETCH_TIMEOUT_S.
    copy.write_docs([*ENTRIES, site.url("/missing.txt"), site.url("/slow.txt"), "# asked again"])
    building = wait_for(lambda: index_status(server)["building"], LIVENESS_S, interval=0.05)
    # The file event usually reports the save; under load, the 1 s poll can notice it first.
    reason = building and building["reason"]
    assert reason and (reason.endswith("event") or reason == "docs.txt content changed (poll)"), building
    assert building["started_at"], building
    assert wait_for(lambda: index_status(server)["building"] is None, LIVENESS_S)


def test_editing_docs_txt_switches_retrieval_without_restart(server, copy):
    question = "Who is the orchid house keeper?"

    def top_source() -> str | None:
        sources = ask(server.grpc_url, question).sources
        return sources[0]["document"] if sources else None  # none relevant enough: the refusal

    assert top_source() != "later/orchid.md"
    edited = time.monotonic()
    copy.write_docs(["notes/garden.txt", "later/"])

    assert wait_for(lambda: top_source() == "later/orchid.md", timeout=LIVENESS_S, interval=0.2)
    print(
        f"live reload: docs.txt edit to an answer from the new document in {time.monotonic() - edited:.2f} s"
    )
    documents = {
        s["document"] for s in ask(server.grpc_url, "What is the launch code of Project Bluefin?").sources
    }
    assert documents <= {"notes/garden.txt", "later/orchid.md"}
    status = copy.status()
    assert status["document_count"] == 2 and status["failures"] == []
    assert {d["document"]: d["embedded"] for d in status["documents"]} == {
        "notes/garden.txt": False,  # unchanged: its chunks were reused, not embedded again
        "later/orchid.md": True,
    }


def test_cancelled_stream_frees_its_request(server):
    cancelled = 'rag_llm_requests_total{finish_reason="cancelled"}'
    before = metrics(server).get(cancelled, 0)
    stream = Stream(server.grpc_url)
    stream.send(
        {"question": "Tell a very long story.", "max_new_tokens": 900, "ignore_eos": True, "use_rag": False}
    )
    seen = []
    while len(seen) < 4:
        kind, _ = stream.events.get(timeout=60)
        seen.append(kind)
    assert seen[0] == "sources" and "completion" in seen
    assert metrics(server)["rag_llm_active_requests"] == 1
    stream.close(cancel=True)

    def freed() -> bool:
        values = metrics(server)
        return values["rag_llm_active_requests"] == 0 and values["rag_llm_pipeline_requests"] == 0

    assert wait_for(freed, timeout=LIVENESS_S)
    assert metrics(server)[cancelled] == before + 1


def tensor(name: str, datatype: str, data) -> grpcclient.InferInput:
    value = np.asarray(data)
    made = grpcclient.InferInput(name, list(value.shape), datatype)
    made.set_data_from_numpy(value)
    return made


BAD_INPUTS = {
    "no pre_prompt": (
        dict(tensor=tensor("question", "BYTES", np.array([b"hi"], dtype=object))),
        "pre_prompt",
    ),
    "wrong datatype": (
        dict(tensor=tensor("pre_prompt", "FP32", np.array([1.5], np.float32))),
        "must be BYTES",
    ),
    "empty": (dict(request=""), "question is empty"),
    "whitespace": (dict(request=" \n\t "), "question is empty"),
    "invalid UTF-8": (dict(request=b"caf\xc3("), "not valid UTF-8"),
    "malformed JSON": (dict(request='{"question": "hi"'), "malformed JSON request"),
    "unknown field": (dict(request={"question": "hi", "tone": "warm"}), "unknown field 'tone'"),
    "negative max_new_tokens": (dict(request={"question": "hi", "max_new_tokens": -1}), "'max_new_tokens'"),
    "temperature below 0": (dict(request={"question": "hi", "temperature": -0.5}), "'temperature' must be"),
    "top_p above 1": (dict(request={"question": "hi", "top_p": 1.5}), "'top_p' must be in (0, 1]"),
    "top_p zero": (dict(request={"question": "hi", "top_p": 0}), "'top_p' must be in (0, 1]"),
    "batch of two": (
        dict(tensor=tensor("pre_prompt", "BYTES", np.array([b"one", b"two"], dtype=object))),
        "batch size 2 is not supported",
    ),
    "question longer than the context": (
        dict(request="Why? " * 1500),
        f"the model's context holds {MAX_CONTEXT} (MAX_CONTEXT_TOKENS)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(server, case):
    send, message = BAD_INPUTS[case]
    stream = Stream(server.grpc_url)
    try:
        stream.send(send.get("request", ""), tensor=send.get("tensor"))
        answer = stream.collect(timeout=60)
    finally:
        stream.close()
    assert answer.error is not None and message in answer.error, (case, answer)
    assert model_ready(server)


def test_server_answers_after_bad_inputs(server):
    answer = ask(server.grpc_url, "When does the community garden open?")
    assert answer.error is None and answer.end["finish_reason"] in ("stop", "length")


def test_long_question_gets_its_context_trimmed_to_fit(server):
    question = "Please consider the garden. " * 140 + "When does the community garden open?"
    answer = ask(server.grpc_url, question)
    assert answer.error is None, answer.error
    assert len(answer.sources) < 4  # of the 4 passages the chain keeps (CONTEXT_PASSAGES)
    assert answer.end["prompt_tokens"] + MAX_NEW <= MAX_CONTEXT


def test_second_request_on_a_busy_stream_is_refused(server):
    stream = Stream(server.grpc_url)
    try:
        stream.send(
            {"question": "Tell a story.", "max_new_tokens": 200, "ignore_eos": True, "use_rag": False}
        )
        assert stream.events.get(timeout=60)[0] == "sources"
        stream.send("A second question on the same stream")
        kinds = []
        while not kinds or kinds[-1] != "end_signal":
            kind, value = stream.events.get(timeout=60)
            kinds.append(kind)
            if kind == "error":
                assert "Node is already processing data" in value
        assert "error" in kinds
    finally:
        stream.close()
    end = json.loads(value)
    assert end["finish_reason"] == "length" and end["generated_tokens"] == 200


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=40),
        st.text(max_size=40).map(str.encode),
        st.fixed_dictionaries(
            {"question": st.text(max_size=20)},
            optional={"max_new_tokens": st.integers(-2, 8), "top_p": st.floats(-1, 2), "x": st.none()},
        ).map(lambda body: json.dumps(body).encode()),
    ),
    st.sampled_from(["BYTES", "UINT8", "FP32"]),
)
def test_random_input_gets_an_answer_or_a_clean_error(server, data, datatype):
    if datatype == "BYTES":
        made = grpcclient.InferInput("pre_prompt", [1], "BYTES")
        made._raw_content = data
    else:
        dtype = {"UINT8": np.uint8, "FP32": np.float32}[datatype]
        made = tensor("pre_prompt", datatype, np.frombuffer(data[: len(data) // 4 * 4] or bytes(4), dtype))
    stream = Stream(server.grpc_url)
    try:
        stream.send("", tensor=made)
        answer = stream.collect(timeout=60)
    finally:
        stream.close()
    if answer.error is None:
        assert answer.order[0] == "sources" and answer.end["finish_reason"] in ("stop", "length")
    else:
        assert answer.error.strip() and "Traceback" not in answer.error
    assert model_ready(server)


def test_rest_infer_on_the_streaming_graph_is_refused_clearly(server):
    body = json.dumps({"inputs": [{"name": "pre_prompt", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]})
    request = urllib.request.Request(
        f"{server.rest_url}/v2/models/python_model/infer", body.encode(), {"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code >= 400
    assert "stream" in refused.value.read().decode().lower()
    assert model_ready(server)
