"""The OpenAI-compatible gateway (client/openai_api.py) as a subprocess in front of the real local server
serving the slow test servable, driven by the official openai package and LangChain's ChatOpenAI."""

from __future__ import annotations

import json
import re
import socket
import urllib.request

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from tests.client.conftest import GROUNDED_ANSWER, GROUNDED_QUESTION
from tests.conftest import wait_until

MODEL = "python_model"
QUESTION = "How do I set it up?"
TWELVE_WORDS = "[turn 1] " + " ".join(f"word{i}" for i in range(1, 13))


def sdk(gateway, **kwargs) -> openai.OpenAI:
    # No retries: a test sees the first answer, and a 5xx is not asked again behind its back.
    return openai.OpenAI(
        base_url=gateway.url, api_key=kwargs.pop("api_key", "unused"), max_retries=0, **kwargs
    )


def ask(question: str = QUESTION) -> list[dict]:
    return [{"role": "user", "content": question}]


def active_streams(slow_server) -> float:
    """The local server's open ModelStreamInfer streams (its /metrics gauge)."""
    with urllib.request.urlopen(f"{slow_server.server.rest_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(r'^ovms_active_streams\{model="python_model"\} (\S+)$', text, re.MULTILINE)
    return float(match[1]) if match else 0.0


@pytest.fixture
def gateway(slow_server, start_gateway):
    return start_gateway(slow_server.grpc_url)


def test_models_lists_the_graph(gateway):
    models = sdk(gateway).models.list()
    assert [model.id for model in models.data] == [MODEL]


def test_whole_answer_with_usage_finish_reason_and_sources(gateway, slow_server):
    completion = sdk(gateway).chat.completions.create(
        model=MODEL,
        messages=ask(),
        max_completion_tokens=5,
        temperature=0.7,
        top_p=0.9,
        seed=7,
        stop=["\n\n", "Question:"],
    )

    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "[turn 1] word1 word2 word3 word4 word5"
    assert choice.finish_reason == "length"  # the servable's end_signal said "length"
    assert completion.usage.completion_tokens == 5
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 5
    assert completion.model == MODEL and completion.id.startswith("chatcmpl-")
    sources = completion.model_extra["sources"]
    assert [s["document"] for s in sources] == ["guide/setup.md", "https://example.com/faq"]
    assert sources[0]["score"] == 0.91 and sources[0]["title"] == "Setup guide"
    # The settings reached the servable as its own request fields.
    (sent,) = slow_server.log.requests()
    assert sent == {
        "messages": ask(),
        "max_new_tokens": 5,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["\n\n", "Question:"],
        "format": "json",
    }


def test_streamed_answer_ends_with_finish_reason_sources_usage_and_done(gateway):
    stream = sdk(gateway).chat.completions.create(
        model=MODEL, messages=ask(), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) == 12  # token by token, not one block
    assert "".join(pieces) == TWELVE_WORDS
    assert chunks[0].choices[0].delta.role == "assistant"
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finished) == 1 and finished[0].choices[0].finish_reason == "length"
    assert [s["document"] for s in finished[0].model_extra["sources"]][0] == "guide/setup.md"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_the_event_stream_ends_with_done_and_has_no_usage_unless_asked(gateway):
    body = {"model": MODEL, "messages": ask(GROUNDED_QUESTION), "stream": True}
    with httpx.stream("POST", f"{gateway.url}/chat/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" and "usage" not in chunk for chunk in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == GROUNDED_ANSWER
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_langchain_chat_openai_whole_streamed_and_multi_turn(gateway, slow_server):
    chat = ChatOpenAI(model=MODEL, base_url=gateway.url, api_key="unused", max_retries=0, max_tokens=4)

    first = chat.invoke([HumanMessage(QUESTION)])
    assert first.content == "[turn 1] word1 word2 word3 word4"
    assert first.response_metadata["finish_reason"] == "length"
    assert first.usage_metadata["output_tokens"] == 4

    history = [SystemMessage("Be brief."), HumanMessage(QUESTION), first, HumanMessage("And then?")]
    pieces = [chunk.content for chunk in chat.stream(history)]
    assert "".join(pieces) == "[turn 2] word1 word2 word3 word4"
    assert sum(1 for piece in pieces if piece) == 4

    # The whole conversation went to the servable, as its turns.
    assert slow_server.log.requests()[-1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": "And then?"},
    ]
    assert isinstance(first, AIMessage)


def test_a_streaming_client_that_goes_away_cancels_the_answer_in_the_server(gateway, slow_server):
    body = {"model": MODEL, "messages": ask(), "stream": True, "max_tokens": 400}
    with httpx.stream("POST", f"{gateway.url}/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        pieces = 0
        while pieces < 3:
            line = next(lines)
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                pieces += 1
        assert active_streams(slow_server) == 1
    # The connection is closed here, 3 of 400 words in.
    cancelled = slow_server.log.wait_for_cancellations()
    assert len(cancelled) == 1 and cancelled[0]["words_sent"] < 400
    wait_until(lambda: active_streams(slow_server) == 0, "no open stream in the server")


def test_a_client_waiting_for_a_whole_answer_that_goes_away_cancels_it(gateway, slow_server):
    body = json.dumps({"model": MODEL, "messages": ask(), "max_tokens": 400}).encode()
    host, port = gateway.url.removeprefix("http://").removesuffix("/v1").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        wait_until(lambda: slow_server.log.requests(), "the servable got the request")
        wait_until(lambda: active_streams(slow_server) == 1, "the answer is being generated")
    cancelled = slow_server.log.wait_for_cancellations()
    assert len(cancelled) == 1 and cancelled[0]["words_sent"] < 400
    wait_until(lambda: active_streams(slow_server) == 0, "no open stream in the server")


@pytest.mark.parametrize(
    ("change", "param", "words"),
    [
        ({"messages": []}, "messages", "at least 1 item"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "'user'"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "messages", "last message must have role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "valid string"),
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"max_completion_tokens": 5000}, "max_completion_tokens", "less than or equal to 4096"),
        ({"temperature": 3}, "temperature", "less than or equal to 2"),
        ({"top_p": 0}, "top_p", "greater than 0"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"stop": ["a", ""]}, "stop[1]", "at least 1 character"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"n": 2}, "n", "should be 1"),
        ({"tools": [{"type": "function"}]}, "tools", "not supported"),
        ({"stream_options": {"include_usage": "often"}}, "stream_options.include_usage", "boolean"),
    ],
)
def test_bad_fields_are_400_naming_the_field(gateway, slow_server, change, param, words):
    body = {"model": MODEL, "messages": ask()} | change
    response = httpx.post(f"{gateway.url}/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert param in error["message"] and words in error["message"]
    assert slow_server.log.requests() == []  # refused before the server


def test_sdk_errors_not_json_unknown_model_and_refused_by_the_servable(gateway):
    client = sdk(gateway)
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="gpt-4o", messages=ask())
    assert not_found.value.code == "model_not_found" and "gpt-4o" in not_found.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=ask(), temperature=-1)
    assert bad.value.param == "temperature"

    not_json = httpx.post(
        f"{gateway.url}/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]["message"]

    # The servable refuses it (INVALID_ARGUMENT): 400 with its reason, in both modes.
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=ask("please fail"))
    assert "asked to fail" in refused.value.message
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=ask("please fail"), stream=True)

    # The gateway keeps serving.
    assert client.chat.completions.create(model=MODEL, messages=ask()).choices[0].message.content


def test_a_failure_in_the_middle_is_an_error_event_or_a_500(gateway):
    client = sdk(gateway)
    with pytest.raises(openai.InternalServerError) as whole:
        client.chat.completions.create(model=MODEL, messages=ask("fail midway"))
    assert "failed in the middle" in whole.value.message
    received = []
    with pytest.raises(openai.APIError) as streamed:
        for chunk in client.chat.completions.create(model=MODEL, messages=ask("fail midway"), stream=True):
            received.append(chunk)
    assert "failed in the middle" in streamed.value.message
    assert "".join(c.choices[0].delta.content or "" for c in received) == "[turn 1] word1 word2 word3"


def test_an_unreachable_server_is_503(start_gateway, unused_port):
    client = sdk(start_gateway(f"127.0.0.1:{unused_port}"))
    with pytest.raises(openai.InternalServerError) as unreachable:
        client.chat.completions.create(model=MODEL, messages=ask())
    assert unreachable.value.status_code == 503 and "not reachable" in unreachable.value.message


def test_the_api_key_is_required_when_set(slow_server, start_gateway):
    gateway = start_gateway(slow_server.grpc_url, "--api-key", "s3cret")
    with pytest.raises(openai.AuthenticationError) as denied:
        sdk(gateway, api_key="wrong").chat.completions.create(model=MODEL, messages=ask())
    assert denied.value.code == "invalid_api_key"
    body = {"model": MODEL, "messages": ask()}
    assert httpx.post(f"{gateway.url}/chat/completions", json=body).status_code == 401  # no key at all
    assert httpx.get(f"{gateway.url}/models").status_code == 401
    assert slow_server.log.requests() == []

    assert sdk(gateway, api_key="s3cret").models.list().data[0].id == MODEL
    chat = ChatOpenAI(model=MODEL, base_url=gateway.url, api_key="s3cret", max_retries=0, max_tokens=2)
    assert chat.invoke(QUESTION).content == "[turn 1] word1 word2"
