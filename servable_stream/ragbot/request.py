"""Parse and validate the `pre_prompt` input: a plain question, a JSON chat request, or the index
status request `{"status": true}`."""

from __future__ import annotations

import functools
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

INPUT_NAME = "pre_prompt"
ROLES = ("system", "user", "assistant")
FIELDS = (
    "messages", "question", "max_new_tokens", "temperature", "top_p", "seed", "stop", "use_rag", "ignore_eos",
)  # fmt: skip
# As the OpenAI API: up to four stop strings.
MAX_STOP_STRINGS = 4


def _error(message: str) -> ValueError:
    return ValueError(f"{INPUT_NAME}: {message}")


@dataclass(frozen=True)
class ChatRequest:
    """One validated request: the conversation and its generation settings."""

    messages: list[dict[str, str]]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    use_rag: bool = True
    ignore_eos: bool = False

    @property
    def question(self) -> str:
        """The last user message: what retrieval searches for."""
        return self.messages[-1]["content"]

    @functools.cached_property
    def user_turns(self) -> list[str]:
        """What the user said, in order: the question last (follow-ups read the turns before it).
        Computed once: retrieval's query and the answer-kind check both read it."""
        return [m["content"] for m in self.messages if m["role"] == "user"]


@dataclass(frozen=True)
class StatusRequest:
    """`{"status": true}`: the index status instead of an answer. It comes through the graph as the
    answers do, since real OVMS reaches a Python-node graph only through KServe."""


def split_elements(raw: bytes) -> list[bytes] | None:
    """The elements of a tritonclient-serialized BYTES buffer (4-byte LE length + data each), or None
    when the buffer is not exactly such a sequence (then it is raw content)."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if len(raw) - offset < 4:
            return None
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if size > len(raw) - offset:
            return None
        elements.append(raw[offset : offset + size])
        offset += size
    return elements or None


def decode_input(tensors: list[Any]) -> str:
    """The question text from the node's input tensors (pyovms.Tensor-like: name, datatype, shape, data)."""
    tensor = next((t for t in tensors if getattr(t, "name", None) == INPUT_NAME), None)
    if tensor is None:
        names = ", ".join(repr(getattr(t, "name", "?")) for t in tensors) or "none"
        raise ValueError(f"missing input '{INPUT_NAME}' (got {names})")
    if tensor.datatype != "BYTES":
        raise _error(f"datatype must be BYTES, got {tensor.datatype}")
    shape = tuple(tensor.shape)
    batch = math.prod(shape) if shape else 1
    if batch != 1:
        raise _error(f"batch size {batch} is not supported (shape {list(shape)}; send one question)")
    raw = bytes(tensor.data)
    elements = split_elements(raw)
    if elements is not None:
        if len(elements) != 1:
            raise _error(f"batch size {len(elements)} is not supported (send one question)")
        raw = elements[0]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at position {exc.start})") from None


_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _check_type(name: str, value: Any, kind: type) -> None:
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok:
        raise _error(f"'{name}' must be {_KIND_NAMES[kind]}, got {json.dumps(value)}")


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    if "messages" in body and "question" in body:
        raise _error("give either 'messages' or 'question', not both")
    if "question" in body:
        question = body["question"]
        _check_type("question", question, str)
        return [{"role": "user", "content": question}]
    if "messages" not in body:
        raise _error("JSON request needs 'messages' (or 'question')")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise _error("'messages' must be a non-empty list")
    result = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise _error(f"'messages[{i}]' must be an object with exactly 'role' and 'content'")
        if message["role"] not in ROLES:
            raise _error(f"'messages[{i}].role' must be one of {', '.join(ROLES)}, got {message['role']!r}")
        _check_type(f"messages[{i}].content", message["content"], str)
        result.append({"role": message["role"], "content": message["content"]})
    if result[-1]["role"] != "user":
        raise _error("the last message must have role 'user'")
    return result


def _number(body: dict, name: str, kind: type, default: Any, ok: Any, rule: str) -> Any:
    if name not in body:
        return default
    value = body[name]
    _check_type(name, value, kind)
    if not ok(value):
        raise _error(f"'{name}' must be {rule}, got {value}")
    return float(value) if kind is float else value


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    """`stop`: one string or a list of up to MAX_STOP_STRINGS non-empty strings that end the answer."""
    stop = body.get("stop", [])
    strings = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(strings, list)
        or len(strings) > MAX_STOP_STRINGS
        or not all(isinstance(item, str) and item for item in strings)
    ):
        raise _error(
            f"'stop' must be a non-empty string or a list of at most {MAX_STOP_STRINGS}, "
            f"got {json.dumps(stop)}"
        )
    return tuple(strings)


def parse_request(text: str, default_max_new_tokens: int) -> ChatRequest | StatusRequest:
    """Turn the decoded `pre_prompt` text into a request, or raise ValueError naming the problem."""
    stripped = text.strip()
    if not stripped:
        raise _error("question is empty")
    if not stripped.startswith("{"):
        return ChatRequest(
            messages=[{"role": "user", "content": stripped}], max_new_tokens=default_max_new_tokens
        )
    try:
        body = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise _error(f"malformed JSON request: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(body, dict):
        raise _error("JSON request must be an object")
    if "status" in body:
        if set(body) != {"status"} or body["status"] is not True:
            raise _error('the status request is {"status": true}, with no other field')
        return StatusRequest()
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise _error(f"unknown field {unknown[0]!r} (allowed: {', '.join(FIELDS)})")
    messages = _messages(body)
    if not messages[-1]["content"].strip():
        raise _error("question is empty")
    use_rag = body.get("use_rag", True)
    _check_type("use_rag", use_rag, bool)
    ignore_eos = body.get("ignore_eos", False)
    _check_type("ignore_eos", ignore_eos, bool)
    return ChatRequest(
        messages=messages,
        max_new_tokens=_number(
            body,
            "max_new_tokens",
            int,
            default_max_new_tokens,
            lambda v: 1 <= v <= 4096,
            "between 1 and 4096",
        ),
        temperature=_number(body, "temperature", float, 0.0, lambda v: 0 <= v <= 2, "between 0 and 2"),
        top_p=_number(body, "top_p", float, 1.0, lambda v: 0 < v <= 1, "in (0, 1]"),
        seed=_number(body, "seed", int, None, lambda v: 0 <= v < 2**63, "an integer >= 0"),
        stop=_stop(body),
        use_rag=use_rag,
        ignore_eos=ignore_eos,
    )
