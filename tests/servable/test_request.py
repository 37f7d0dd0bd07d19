"""pre_prompt parsing: both BYTES encodings, the JSON protocol, every bad input naming the problem."""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ragbot.request import ChatRequest, StatusRequest, decode_input, parse_request


def tensor(data: bytes, name: str = "pre_prompt", datatype: str = "BYTES", shape: tuple = (1,)):
    """What the server hands to execute: a pyovms.Tensor-like object with a flat byte buffer."""
    return SimpleNamespace(name=name, datatype=datatype, shape=shape, data=memoryview(data))


def serialized(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def test_raw_and_serialized_bytes_give_the_same_text():
    question = "Wie schwer darf der Korb sein? ✓"
    assert decode_input([tensor(question.encode())]) == question
    assert decode_input([tensor(serialized(question.encode()))]) == question


def test_plain_text_is_one_user_message():
    request = parse_request("  What is the HT-7?\n", default_max_new_tokens=77)
    assert request == ChatRequest(
        messages=[{"role": "user", "content": "What is the HT-7?"}], max_new_tokens=77
    )


def test_json_request_with_history_and_settings():
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Price of the HT-7?"},
        ],
        "max_new_tokens": 12,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 3,
        "stop": ["\n\n", "Question:"],
        "use_rag": False,
        "ignore_eos": True,
    }
    request = parse_request(json.dumps(body), 256)
    assert request.messages == body["messages"]
    assert (request.max_new_tokens, request.temperature, request.top_p, request.seed) == (12, 0.7, 0.9, 3)
    assert (request.use_rag, request.ignore_eos, request.question) == (False, True, "Price of the HT-7?")
    assert request.stop == ("\n\n", "Question:")


def test_one_stop_string_and_none():
    assert parse_request('{"question": "hi", "stop": "END"}', 256).stop == ("END",)
    assert parse_request('{"question": "hi"}', 256).stop == ()


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([], "missing input 'pre_prompt'"),
        ([tensor(b"hi", name="question")], "missing input 'pre_prompt'"),
        ([tensor(b"\x00\x00\x80?", datatype="FP32")], "datatype must be BYTES, got FP32"),
        ([tensor(b"ab", shape=(2,))], "batch size 2 is not supported"),
        ([tensor(serialized(b"one", b"two"))], "batch size 2 is not supported"),
        ([tensor(b"caf\xc3")], "not valid UTF-8 (byte 0xc3 at position 3)"),
    ],
)
def test_bad_tensors(inputs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_input(inputs)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "question is empty"),
        (" \n\t ", "question is empty"),
        ('{"question": "hi",', "malformed JSON request"),
        ("[1, 2]", None),  # not JSON-looking: a plain question
        ('{"question": "hi", "colour": "red"}', "unknown field 'colour'"),
        ('{"question": "hi", "max_new_tokens": -5}', "'max_new_tokens' must be between 1 and 4096, got -5"),
        ('{"question": "hi", "max_new_tokens": 1.5}', "'max_new_tokens' must be an integer, got 1.5"),
        ('{"question": "hi", "temperature": -1}', "'temperature' must be between 0 and 2, got -1"),
        ('{"question": "hi", "top_p": 0}', "'top_p' must be in (0, 1], got 0"),
        ('{"question": "hi", "top_p": 1.5}', "'top_p' must be in (0, 1], got 1.5"),
        ('{"question": "hi", "seed": -1}', "'seed' must be an integer >= 0"),
        ('{"question": "hi", "stop": ""}', "'stop' must be a non-empty string or a list of at most 4"),
        ('{"question": "hi", "stop": ["a", 1]}', "'stop' must be a non-empty string"),
        ('{"question": "hi", "stop": ["a", "b", "c", "d", "e"]}', "a list of at most 4"),
        ('{"question": "hi", "use_rag": "yes"}', "'use_rag' must be true or false, got \"yes\""),
        ('{"question": "   "}', "question is empty"),
        ('{"messages": []}', "'messages' must be a non-empty list"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "'messages[0].role' must be one of"),
        (
            '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}',
            "last message",
        ),
        ('{"question": "a", "messages": [{"role": "user", "content": "x"}]}', "not both"),
        ('{"max_new_tokens": 5}', "needs 'messages'"),
    ],
)
def test_bad_requests_name_the_problem(text, message):
    if message is None:
        assert parse_request(text, 10).question == text
        return
    with pytest.raises(ValueError) as raised:
        parse_request(text, 10)
    assert str(raised.value).startswith("pre_prompt: ")
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"status": true}', None),
        (' { "status" : true }\n', None),
        ('{"status": false}', 'the status request is {"status": true}'),
        ('{"status": 1}', 'the status request is {"status": true}'),
        ('{"status": true, "question": "hi"}', "with no other field"),
    ],
)
def test_the_status_request(text, message):
    if message is None:
        assert parse_request(text, 10) == StatusRequest()
        return
    with pytest.raises(ValueError, match="^pre_prompt: ") as raised:
        parse_request(text, 10)
    assert message in str(raised.value)


@given(st.binary(max_size=64), st.sampled_from(["BYTES", "FP32", "UINT8"]), st.integers(0, 3))
def test_any_bytes_give_a_request_or_a_clear_error(data, datatype, batch):
    try:
        request = parse_request(decode_input([tensor(data, datatype=datatype, shape=(batch,))]), 16)
    except ValueError as error:
        assert str(error).startswith(("pre_prompt: ", "missing input"))
    else:
        assert request.question.strip() and 1 <= request.max_new_tokens <= 4096


JSON_VALUES = (
    st.none() | st.booleans() | st.integers(-10, 5000) | st.floats(allow_nan=True) | st.text(max_size=5)
)


@given(
    st.dictionaries(st.sampled_from(["question", "max_new_tokens", "temperature", "top_p", "x"]), JSON_VALUES)
)
def test_any_json_gives_a_request_or_a_clear_error(body):
    try:
        request = parse_request(json.dumps(body), 16)
    except ValueError as error:
        assert str(error).startswith("pre_prompt: ")
    else:
        assert 0 <= request.temperature <= 2 and 0 < request.top_p <= 1
