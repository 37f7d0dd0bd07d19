"""Random requests against the real servable (gRPC streaming and REST): every request gets a result or
a clean error, and the server stays live and the model ready."""

from __future__ import annotations

import json
import string
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.streams import ask, json_request
from tests.servable.rag import MODEL, Answer, Stream

pytestmark = pytest.mark.slow

CALL_TIMEOUT_S = 60.0
MAX_NEW_TOKENS = 6
DATATYPES = ("BYTES", "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BF16")  # fmt: skip
# Questions that must be answered: no leading "{" (JSON) and no leading bytes a BYTES length prefix
# could be read from.
PLAIN = st.text(alphabet=string.ascii_letters + string.digits + " ?.,'-", min_size=1, max_size=60).filter(
    lambda s: s.strip() and s.lstrip()[0].isalnum()
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
# max_new_tokens: small valid values or anything invalid (never a long valid generation).
MAX_TOKENS = (
    st.integers(1, MAX_NEW_TOKENS)
    | st.integers(max_value=0)
    | st.integers(min_value=4097)
    | JSON_VALUES.filter(lambda v: not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096))
)
MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system"]) | st.text(max_size=8),
        "content": PLAIN | JSON_VALUES,
    }
)
JSON_REQUEST = st.fixed_dictionaries(
    {},
    optional={
        "messages": st.lists(MESSAGE, max_size=3) | JSON_VALUES,
        "question": PLAIN | JSON_VALUES,
        "max_new_tokens": MAX_TOKENS,
        "temperature": st.floats(-1, 3) | JSON_VALUES,
        "top_p": st.floats(-0.5, 1.5) | JSON_VALUES,
        "seed": st.integers(-5, 2**64) | JSON_VALUES,
        "use_rag": st.booleans() | JSON_VALUES,
        "ignore_eos": st.booleans() | JSON_VALUES,
        "bogus_field": JSON_VALUES,
    },
)


@dataclass(frozen=True)
class Case:
    """One request: its tensors (name, datatype, shape, bytes) and what must come back."""

    tensors: tuple[tuple[str, str, tuple[int, ...], bytes], ...]
    expect: str  # "answer", "error" or "any"
    model: str = MODEL


def _question(payload: bytes, expect: str) -> Case:
    return Case((("pre_prompt", "BYTES", (1,), payload),), expect)


def _serialized(elements: list[bytes]) -> bytes:
    tensor = grpcclient.InferInput("pre_prompt", [len(elements)], "BYTES")
    tensor.set_data_from_numpy(np.array(elements, dtype=object))
    return tensor._raw_content


TENSOR = st.tuples(
    st.sampled_from(["pre_prompt"]) | st.text(max_size=12),
    st.sampled_from(DATATYPES) | st.text(max_size=8),
    st.lists(st.integers(-2, 4), max_size=3).map(tuple),
    st.binary(max_size=48),
)
CASES = st.one_of(
    PLAIN.map(lambda q: _question(q.encode(), "answer")),
    PLAIN.map(lambda q: _question(_serialized([q.encode()]), "answer")),
    st.lists(PLAIN.map(str.encode), min_size=2, max_size=3).map(
        lambda qs: _question(_serialized(qs), "error")
    ),
    st.text(alphabet=" \t\r\n", max_size=5).map(lambda q: _question(q.encode(), "error")),
    st.text(max_size=80).map(lambda q: _question(q.encode(), "any")),
    st.binary(max_size=80).map(lambda b: _question(b, "any")),
    st.builds(
        lambda q, n: _question(json_request(q, max_new_tokens=n).encode(), "answer"), PLAIN, st.integers(1, 6)
    ),
    JSON_REQUEST.map(lambda body: _question(json.dumps(body).encode(), "any")),
    JSON_VALUES.map(lambda value: _question(json.dumps(value).encode(), "any")),
    st.lists(TENSOR, max_size=3).map(lambda tensors: Case(tuple(tensors), "any")),
    st.builds(
        lambda name: Case((("pre_prompt", "BYTES", (1,), b"hello"),), "error", name), st.text(max_size=10)
    ),
)


def _send(url: str, case: Case) -> Answer:
    inputs = []
    for name, datatype, shape, data in case.tensors:
        tensor = grpcclient.InferInput(name, list(shape), datatype)
        tensor._raw_content = data
        inputs.append(tensor)
    stream = Stream(url)
    try:
        answer = Answer(sent_at=time.perf_counter())
        stream.client.async_stream_infer(case.model, inputs)
        return stream.collect(answer=answer, timeout=CALL_TIMEOUT_S)
    finally:
        stream.close(cancel=True)


def _check_clean_error(message: str, case: Case) -> None:
    assert message and message.strip(), case
    assert "Traceback" not in message and len(message) < 2000, (case, message)


@pytest.fixture(scope="module")
def server(shared):
    assert shared.copy.env["MAX_NEW_TOKENS"] == str(MAX_NEW_TOKENS)
    return shared.server


def test_random_tensors_and_strings_over_grpc_streaming(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    seen = {"answer": 0, "error": 0}

    @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(CASES)
    def check(case: Case) -> None:
        answer = _send(server.grpc_url, case)
        if answer.error is not None:
            _check_clean_error(answer.error, case)
            seen["error"] += 1
            assert case.expect != "answer", (case, answer.error)
        else:
            assert answer.end is not None and answer.sources is not None, case
            assert answer.end["finish_reason"] in ("stop", "length"), (case, answer.end)
            # No passage relevant to a random question: the refusal, sent without generating.
            refused = answer.end["grounding"]["refused"] and answer.sources == []
            assert (0 if refused else 1) <= answer.end["generated_tokens"] <= MAX_NEW_TOKENS, (
                case,
                answer.end,
            )
            assert answer.text, case
            seen["answer"] += 1
            assert case.expect != "error", (case, answer)
        assert server.process.poll() is None, server.log_text()[-3000:]
        assert client.is_server_live() and client.is_model_ready(MODEL)

    check()
    print(f"random gRPC requests: {seen['answer']} answered, {seen['error']} clean errors")
    assert seen["answer"] and seen["error"], seen
    answer = ask(server.grpc_url, json_request("How long does the Harvest Tern HT-7 fly?", max_new_tokens=4))
    assert answer.end is not None and answer.error is None, answer


REST_INPUT = st.fixed_dictionaries(
    {"name": st.sampled_from(["pre_prompt"]) | st.text(max_size=8)},
    optional={
        "datatype": st.sampled_from(DATATYPES) | JSON_VALUES,
        "shape": st.lists(st.integers(-2, 4), max_size=3) | JSON_VALUES,
        "data": JSON_VALUES,
    },
)
REST_BODY = st.one_of(
    st.binary(max_size=100),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"inputs": st.lists(REST_INPUT, max_size=3) | JSON_VALUES},
        optional={"parameters": JSON_VALUES, "outputs": JSON_VALUES, "id": JSON_VALUES},
    ).map(lambda v: json.dumps(v).encode()),
)


def test_random_bodies_over_rest(server):
    @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(
        model=st.just(MODEL) | st.text(alphabet=string.ascii_letters + "_-.", min_size=1, max_size=12),
        body=REST_BODY,
        header=st.none() | st.text(alphabet=string.digits + "-x", max_size=6),
    )
    def check(model: str, body: bytes, header: str | None) -> None:
        headers = {"Content-Type": "application/json"}
        if header is not None:
            headers["Inference-Header-Content-Length"] = header
        request = urllib.request.Request(
            f"{server.rest_url}/v2/models/{urllib.parse.quote(model, safe='')}/infer",
            body,
            headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_S) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        # The graph streams, so unary REST infer is always refused: with a KServe error, never a crash.
        assert status in (400, 404, 413), (model, body, status, payload)
        error = json.loads(payload)["error"]
        assert isinstance(error, str) and error and "Traceback" not in error
        if model == MODEL:
            assert status == 400 and "ModelStreamInfer" in error, error
        assert server.process.poll() is None
        with urllib.request.urlopen(f"{server.rest_url}/v2/models/{MODEL}/ready", timeout=10) as response:
            assert response.status == 200

    check()
