"""A tritonclient streaming client for the RAG servable: send one question, collect its events."""

from __future__ import annotations

import json
import queue
import time
from dataclasses import dataclass, field
from typing import Any

import tritonclient.grpc as grpcclient

MODEL = "python_model"


def question_input(text: str | bytes) -> grpcclient.InferInput:
    """The reference demo's input: BYTES [1] whose raw content is the UTF-8 question (or JSON request)."""
    tensor = grpcclient.InferInput("pre_prompt", [1], "BYTES")
    tensor._raw_content = text.encode("utf-8") if isinstance(text, str) else text
    return tensor


def json_request(question: str, **settings: Any) -> str:
    """A JSON chat request with one user message and the given generation settings."""
    return json.dumps({"messages": [{"role": "user", "content": question}], **settings})


@dataclass
class Answer:
    """What one stream request produced: sources, completion pieces, the end signal or an error."""

    sources: list[dict] | None = None
    pieces: list[str] = field(default_factory=list)
    end: dict | None = None
    error: str | None = None
    sent_at: float = 0.0
    first_piece_at: float | None = None
    done_at: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_piece_at is None else self.first_piece_at - self.sent_at


class RagStream:
    """One gRPC stream (tritonclient) to the servable; responses land in a queue as (name, text|error)."""

    def __init__(self, url: str) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self.events: queue.Queue[tuple[str, str]] = queue.Queue()
        self.client.start_stream(callback=self._on_response)

    def _on_response(self, result: Any, error: Any) -> None:
        if error is not None:
            self.events.put(("error", error.message() if hasattr(error, "message") else str(error)))
            return
        response = result.get_response()
        for output in response.outputs:
            self.events.put((output.name, result.as_numpy(output.name).tobytes().decode("utf-8")))

    def send(self, text: str | bytes) -> Answer:
        """Send a question; returns the Answer that `collect` fills."""
        answer = Answer(sent_at=time.perf_counter())
        self.client.async_stream_infer(MODEL, [question_input(text)])
        return answer

    def next_event(self, answer: Answer, deadline: float) -> str:
        """Take the next event into `answer`; returns its kind ('sources', 'completion', ...)."""
        kind, value = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
        now = time.perf_counter()
        if kind == "error":
            answer.error, answer.done_at = value, now
        elif kind == "sources":
            answer.sources = json.loads(value)
        elif kind == "completion":
            answer.pieces.append(value)
            if answer.first_piece_at is None:
                answer.first_piece_at = now
        elif kind == "end_signal":
            answer.end, answer.done_at = json.loads(value), now
        return kind

    def collect(self, answer: Answer, timeout: float) -> Answer:
        """Events until end_signal or an error; queue.Empty when `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while self.next_event(answer, deadline) not in ("end_signal", "error"):
            pass
        return answer

    def ask(self, text: str | bytes, timeout: float = 60.0) -> Answer:
        return self.collect(self.send(text), timeout)

    def close(self, cancel: bool = False) -> None:
        """End the stream; with `cancel`, cancel the call (the server sees a client cancel)."""
        try:
            self.client.stop_stream(cancel_requests=cancel)
        finally:
            self.client.close()


def ask(url: str, text: str | bytes, timeout: float = 60.0) -> Answer:
    """One question on a fresh stream."""
    stream = RagStream(url)
    try:
        return stream.ask(text, timeout)
    finally:
        stream.close(cancel=True)
