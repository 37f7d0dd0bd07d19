"""KServe gRPC streaming client for the RAG chatbot graph, shared by the Gradio page and the CLI.

One question is one `ModelStreamInfer` stream (tritonclient's `start_stream` / `async_stream_infer`).
The graph answers with `sources` (once), `completion` pieces and a final `end_signal`; `AnswerStream`
turns them into typed events. Closing the stream early (`cancel()`) cancels the answer in the server.
The index status is asked the same way (`{"status": true}`, answered by `status`): on real OVMS the
graph is reachable only through KServe.

Several servers (replicas) are one gRPC target: `host1:9000,host2:9000` or a `dns:///name:port`
(a Kubernetes headless Service), balanced by gRPC's own `round_robin` policy, which sends each new
stream to a ready replica and skips one that is down. A question whose stream breaks before its first
text piece is asked once more, on another replica; once text was shown, the user gets an error.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import queue
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

DEFAULT_URL = "localhost:9000"
DEFAULT_MODEL = "python_model"
INPUT_NAME = "pre_prompt"
STATUS_REQUEST = json.dumps({"status": True})
# A busy server (a long prompt being read) can take seconds to answer a health check.
STATUS_TIMEOUT_S = 5.0
# gRPC's round_robin policy over every address of the target (the default, pick_first, uses one).
# A replica that was down is tried again every 2 s at most (gRPC's default backoff grows to 120 s).
CHANNEL_ARGS = [
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
# Failures the same question meets on every replica: not asked again.
NOT_RETRIED = ("INVALID_ARGUMENT", "NOT_FOUND")

Message = dict[str, str]


@dataclass(frozen=True)
class Source:
    """One retrieved document chunk the answer is based on; `text` is the passage as the model was given
    it (empty from a servable that does not send it), `snippet` its beginning."""

    document: str
    title: str
    snippet: str
    score: float
    text: str = ""


@dataclass(frozen=True)
class Sources:
    """The `sources` output: sent once, before the first text piece."""

    items: tuple[Source, ...]


@dataclass(frozen=True)
class TextPiece:
    """One `completion` output: the next piece of the answer."""

    text: str


@dataclass(frozen=True)
class Grounding:
    """The servable's check of the answer against its sources, so that clients can show how far to trust
    it: how many numbers and names it states (`facts`), the ones no source holds (`unsupported`, exact
    substrings of the answer, in answer order), the source numbers it cites as [n] (`citations`), and
    whether it says that the documents do not cover the question (`refused`)."""

    facts: int
    unsupported: tuple[str, ...]
    citations: tuple[int, ...]
    refused: bool

    @property
    def missing(self) -> tuple[str, ...]:
        """The unsupported facts once each, in answer order: the list people read."""
        return tuple(dict.fromkeys(self.unsupported))


def parse_grounding(value: object) -> Grounding | None:
    """The end_signal's `grounding`, or None when it is absent (an older servable) or malformed: a wrong
    check must not cost the answer, and clients then show nothing extra."""
    if not isinstance(value, dict):
        return None
    facts, unsupported, citations, refused = (
        value.get(key) for key in ("facts", "unsupported", "citations", "refused")
    )

    def whole(number: object) -> bool:
        return isinstance(number, int) and not isinstance(number, bool) and number >= 0

    if not (
        whole(facts)
        and isinstance(unsupported, list)
        and all(isinstance(fact, str) and fact.strip() for fact in unsupported)
        and isinstance(citations, list)
        and all(whole(number) and number >= 1 for number in citations)
        and isinstance(refused, bool)
    ):
        return None
    return Grounding(facts, tuple(unsupported), tuple(citations), refused)


@dataclass(frozen=True)
class EndSignal:
    """The `end_signal` output: the answer is over; why, how fast it was, and its grounding (None when
    the servable does not check answers)."""

    finish_reason: str
    prompt_tokens: int = 0
    generated_tokens: int = 0
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0
    retrieval_ms: float = 0.0
    grounding: Grounding | None = None

    def summary(self) -> str:
        """One line of timing for people: time to first token, speed, size."""
        return (
            f"first token {self.ttft_ms:.0f} ms · {self.tokens_per_s:.1f} tokens/s · "
            f"{self.generated_tokens} tokens"
        )

    @property
    def problem(self) -> str | None:
        """A plain sentence when the server ended the answer abnormally, else None."""
        return {
            "error": "The server ended the answer with an error.",
            "shutdown": "The server shut down during the answer.",
            "cancelled": "The server cancelled the answer.",
        }.get(self.finish_reason)


@dataclass(frozen=True)
class DocumentStatus:
    """One document of the index: `state` is "indexed", "kept" (it failed to load again; its previous
    version still serves) or "failed" (not in the index); `reason` says why for the last two."""

    document: str
    title: str
    state: str
    chunks: int
    indexed_at: str | None
    reason: str = ""


@dataclass(frozen=True)
class IndexStatus:
    """The `status` output: what the chatbot knows. `building` is the rebuild in progress (its reason
    and start time), None when there is none."""

    state: str
    documents: tuple[DocumentStatus, ...]
    chunks: int = 0
    updated_at: str | None = None
    message: str = ""
    building: dict[str, str] | None = None

    @property
    def failures(self) -> tuple[DocumentStatus, ...]:
        return tuple(d for d in self.documents if d.reason)

    def summary(self) -> str:
        """One line for people: the index, and the rebuild in progress if there is one."""
        indexed = sum(d.state != "failed" for d in self.documents)
        line = (
            f"Index {self.state}: {indexed} documents, {self.chunks} chunks, updated {self.updated_at or '-'}"
        )
        if self.message:
            line += f" ({self.message})"
        if self.building:
            line += f"; rebuilding since {self.building.get('started_at')} ({self.building.get('reason')})"
        return line


def parse_index_status(fields: dict[str, Any]) -> IndexStatus:
    """The `status` output's JSON as an IndexStatus."""
    documents = tuple(
        DocumentStatus(
            document=str(d["document"]),
            title=str(d.get("title") or ""),
            state=str(d["state"]),
            chunks=int(d.get("chunks") or 0),
            indexed_at=d.get("indexed_at"),
            reason=str(d.get("reason") or ""),
        )
        for d in fields.get("documents", [])
    )
    building = fields.get("building")
    return IndexStatus(
        state=str(fields.get("state", "")),
        documents=documents,
        chunks=int(fields.get("chunks") or 0),
        updated_at=fields.get("updated_at"),
        message=str(fields.get("message") or ""),
        building=building if isinstance(building, dict) else None,
    )


@dataclass(frozen=True)
class StreamError:
    """The answer failed; `message` is a plain sentence for people, never a traceback. `invalid`: the
    servable refused the request itself (its refusals name the input, `pre_prompt: ...`), so asking
    again unchanged will not help."""

    message: str
    unreachable: bool = False
    invalid: bool = False


Event = Sources | TextPiece | EndSignal | IndexStatus | StreamError


@dataclass(frozen=True)
class GenerationSettings:
    """Per-request settings; None (or nothing to stop at) leaves the servable's default."""

    max_new_tokens: int | None = None
    temperature: float | None = None
    use_rag: bool = True
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False


@dataclass(frozen=True)
class ServerStatus:
    """Readiness of the server (ServerLive) and of the graph (ModelReady)."""

    live: bool
    model_ready: bool
    message: str
    busy: bool = False


def build_request(messages: Sequence[Message], settings: GenerationSettings = GenerationSettings()) -> str:
    """The `pre_prompt` text: the plain question when nothing else needs saying, else the JSON request."""
    if not messages or messages[-1].get("role") != "user":
        raise ValueError("the last message must be the user's question")
    question = messages[-1]["content"]
    if len(messages) == 1 and settings == GenerationSettings() and not question.lstrip().startswith("{"):
        return question
    request: dict[str, Any] = {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
    if settings.max_new_tokens is not None:
        request["max_new_tokens"] = int(settings.max_new_tokens)
    if settings.temperature is not None:
        request["temperature"] = float(settings.temperature)
    if settings.top_p is not None:
        request["top_p"] = float(settings.top_p)
    if settings.seed is not None:
        request["seed"] = int(settings.seed)
    if settings.stop:
        request["stop"] = list(settings.stop)
    if not settings.use_rag:
        request["use_rag"] = False
    if settings.ignore_eos:
        request["ignore_eos"] = True
    return json.dumps(request, ensure_ascii=False)


def make_input(text: str) -> grpcclient.InferInput:
    """`pre_prompt` as one BYTES element, shape [1]."""
    tensor = grpcclient.InferInput(INPUT_NAME, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([text.encode("utf-8")], dtype=object))
    return tensor


def parse_output(name: str, payload: bytes) -> Event | None:
    """Turn one output tensor of the stream into an event (None for outputs this client does not know)."""
    text = payload.decode("utf-8")
    if name == "completion":
        return TextPiece(text)
    if name == "sources":
        items = json.loads(text)
        return Sources(
            tuple(
                Source(
                    document=str(item.get("document", "")),
                    title=str(item.get("title", "")),
                    snippet=str(item.get("snippet", "")),
                    score=float(item.get("score", 0.0)),
                    text=str(item.get("text", "")),
                )
                for item in items
            )
        )
    if name == "status":
        return parse_index_status(json.loads(text))
    if name == "end_signal":
        fields = json.loads(text)
        return EndSignal(
            finish_reason=str(fields.get("finish_reason", "stop")),
            prompt_tokens=int(fields.get("prompt_tokens", 0)),
            generated_tokens=int(fields.get("generated_tokens", 0)),
            ttft_ms=float(fields.get("ttft_ms", 0.0)),
            tokens_per_s=float(fields.get("tokens_per_s", 0.0)),
            retrieval_ms=float(fields.get("retrieval_ms", 0.0)),
            grounding=parse_grounding(fields.get("grounding")),
        )
    return None


def _address(item: str) -> tuple[str, str]:
    """`host:port` or `[v6]:port` -> (host, port), for a list of servers."""
    host, colon, port = item.strip().rpartition(":")
    if not colon or not host or not port.isdigit():
        raise ValueError(f"{item.strip()!r} is not host:port (each server of a list needs its port)")
    return host.strip("[]"), port


def grpc_target(url: str) -> str:
    """The gRPC target of `url`: a `scheme:` target (`dns:///`, `ipv4:`, `ipv6:`, `unix:`) as it is;
    `host:port` as it is (every address its name resolves to is used); a comma list of servers as one
    `ipv4:` or `ipv6:` target, each name resolved once, now. ValueError names a bad or unknown server,
    or an empty list (which gRPC would retry forever as the invalid target `dns:///`)."""
    servers = [item.strip() for item in url.split(",") if item.strip()]
    if not servers:
        raise ValueError(
            f"{url!r} names no server: give host:port, a comma list of them, or dns:///name:port"
        )
    if len(servers) == 1:
        return servers[0]
    addresses: list[tuple[int, str, str]] = []
    for item in servers:
        host, port = _address(item)
        try:
            found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ValueError(f"server {host!r} in --ovms_url: {exc.strerror}") from None
        ips = [ipaddress.ip_address(info[4][0]) for info in found]
        ip = next((ip for ip in ips if ip.version == 4), ips[0])
        addresses.append((ip.version, str(ip), port))
    versions = {version for version, _, _ in addresses}
    if len(versions) > 1:
        raise ValueError("the servers mix IPv4 and IPv6 addresses; gRPC takes one family per target")
    if versions == {4}:
        return "ipv4:" + ",".join(f"{ip}:{port}" for _, ip, port in addresses)
    return "ipv6:" + ",".join(f"[{ip}]:{port}" for _, ip, port in addresses)


def _has_status(error: InferenceServerException, code: str) -> bool:
    """Whether a failed call ended with the gRPC status `code` (e.g. "UNAVAILABLE")."""
    return str(error.status() or "").endswith(code)


class OvmsClient:
    """Talks to one graph on one server or on several replicas (see the module docstring)."""

    def __init__(self, url: str = DEFAULT_URL, model_name: str = DEFAULT_MODEL) -> None:
        self.url = url
        self.model_name = model_name
        self.target = grpc_target(url)
        # Health checks go through one long-lived channel; its connections to the replicas stay open
        # and are shared by the streams' channels (gRPC's global subchannel pool), so a new stream
        # finds every live replica ready and round_robin starts at a random one of them.
        self._health = self.connect()

    def connect(self, fresh: bool = False) -> grpcclient.InferenceServerClient:
        """A tritonclient client on a new channel to the target, balanced by round_robin. Channels
        share their connections (gRPC's global subchannel pool), and with them the reconnect backoff
        of a replica that was down; a `fresh` channel has connections of its own, opened now."""
        args = CHANNEL_ARGS + [("grpc.use_local_subchannel_pool", 1)] if fresh else CHANNEL_ARGS
        return grpcclient.InferenceServerClient(self.target, channel_args=args)

    def status(self) -> ServerStatus:
        """Ask ServerLive and ModelReady (of one ready replica); never raises."""
        live = ready = False
        for attempt in range(2):
            # No replica was reachable: the shared connections may be waiting out their reconnect
            # backoff (up to 2 s) after the server came back; a fresh channel asks the server now.
            client = self._health if attempt == 0 else self.connect(fresh=True)
            try:
                live = client.is_server_live(client_timeout=STATUS_TIMEOUT_S)
                ready = live and client.is_model_ready(self.model_name, client_timeout=STATUS_TIMEOUT_S)
            except InferenceServerException as error:
                if _has_status(error, "DEADLINE_EXCEEDED"):
                    message = f"Server at {self.url} is busy: no answer to a health check in time."
                    return ServerStatus(True, False, message, busy=True)
            finally:
                if client is not self._health:
                    client.close()
            if live:
                break
        if not live:
            return ServerStatus(False, False, f"Server at {self.url} is not reachable.")
        if not ready:
            return ServerStatus(True, False, f"Server is up; graph '{self.model_name}' is not ready yet.")
        return ServerStatus(True, True, f"Server and graph '{self.model_name}' are ready.")

    def ask(
        self, messages: Sequence[Message], settings: GenerationSettings = GenerationSettings()
    ) -> AnswerStream:
        """Start streaming the answer to the conversation `messages` (the last one is the question)."""
        return AnswerStream(self, build_request(messages, settings))

    def index_status(self) -> IndexStatus | StreamError:
        """What the chatbot knows: each document's state, failures with reasons, a rebuild in progress."""
        status: IndexStatus | StreamError | None = None
        for event in AnswerStream(self, STATUS_REQUEST):  # to its end_signal: the stream ends cleanly
            if isinstance(event, IndexStatus | StreamError):
                status = event
        return status or StreamError("The server sent no index status (a servable without it?).")

    def error_for(self, error: InferenceServerException, answered: bool) -> StreamError:
        """A plain message for a failed stream."""
        reason = f"The server could not answer: {error.message() or 'unknown error'}"
        if answered:
            if _has_status(error, "UNAVAILABLE"):
                return StreamError("The connection to the server was lost during the answer.", True)
            return StreamError(reason)
        if f"{INPUT_NAME}:" in (error.message() or ""):
            return StreamError(reason, invalid=True)
        status = self.status()
        if status.busy:
            return StreamError(f"The server at {self.url} is too busy to answer now; try again shortly.")
        if not status.live:
            return StreamError(f"The server at {self.url} is not reachable. Is it running?", True)
        if not status.model_ready:
            return StreamError(f"The server is up but the graph '{self.model_name}' is not ready yet.")
        return StreamError(reason)


_DONE = object()
# A question is asked at most this often: once, and once more on another replica if the first broke.
ATTEMPTS = 2


@dataclass(frozen=True)
class _Broken:
    """An attempt failed before any text piece: the question may be asked again."""

    error: InferenceServerException


class AnswerStream:
    """One streamed answer. Iterate it for events; `cancel()` (from any thread) closes the gRPC stream
    with `cancel_requests=True`, which cancels the generation in the server, and ends the iteration.
    A stream that breaks before its first text piece is opened once more (round_robin picks a ready
    replica); a `sources` output the retry sends again is not repeated."""

    def __init__(self, owner: OvmsClient, request_text: str) -> None:
        self._owner = owner
        self._request_text = request_text
        self._responses: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._client: grpcclient.InferenceServerClient | None = None
        self._cancelled = False
        self._finished = False
        self.attempts = 0  # streams opened for this answer: 2 when it was asked again

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @staticmethod
    def _on_response(responses: queue.Queue, result: Any, error: InferenceServerException | None) -> None:
        responses.put((result, error))

    def _open(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._responses = queue.Queue()
            # The retry opens connections of its own: the shared ones may be backing off a replica.
            self._client = self._owner.connect(fresh=self.attempts > 1)
            self._client.start_stream(callback=functools.partial(self._on_response, self._responses))
            self._client.async_stream_infer(self._owner.model_name, [make_input(self._request_text)])

    def _close(self, cancel: bool) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.stop_stream(cancel_requests=cancel)
            client.close()

    def cancel(self) -> None:
        """Stop the answer here and in the server; safe to call more than once and after the end."""
        with self._lock:
            if self._finished or self._cancelled:
                return
            self._cancelled = True
            self._responses.put(_DONE)
        self._close(cancel=True)

    def __iter__(self) -> Iterator[Event]:
        shown: Sources | None = None
        for attempt in range(1, ATTEMPTS + 1):
            self.attempts, broken = attempt, None
            for event in self._attempt():
                if isinstance(event, _Broken):
                    broken = event.error
                elif isinstance(event, Sources):
                    if event != shown:
                        shown = event
                        yield event
                else:
                    yield event
            if broken is None:
                return
            if attempt == ATTEMPTS or self._cancelled or any(_has_status(broken, c) for c in NOT_RETRIED):
                yield self._owner.error_for(broken, answered=False)
                return

    def _attempt(self) -> Iterator[Event | _Broken]:
        """The events of one gRPC stream; `_Broken` last when it failed before any text piece."""
        answered = False
        try:
            try:
                self._open()
            except InferenceServerException as exc:
                # A stream that failed at once reports why through the callback; prefer that reason.
                failure = exc
                with contextlib.suppress(queue.Empty):
                    failure = self._responses.get(timeout=1.0)[1] or exc
                yield _Broken(failure)
                return
            while not self._cancelled:
                item = self._responses.get()
                if item is _DONE:
                    return
                result, error = item
                if error is not None:
                    if not self._cancelled:
                        yield self._owner.error_for(error, answered) if answered else _Broken(error)
                    return
                for output in result.get_response().outputs:
                    try:
                        event = parse_output(output.name, result.as_numpy(output.name).tobytes())
                    except (UnicodeDecodeError, ValueError, TypeError, AttributeError) as exc:
                        yield StreamError(f"The server sent a malformed '{output.name}' output ({exc}).")
                        return
                    if event is None:
                        continue
                    answered = answered or isinstance(event, TextPiece)
                    if isinstance(event, EndSignal):
                        with self._lock:
                            self._finished = True
                        yield event
                        return
                    yield event
        finally:
            # Normal end: half-close and let the server finish the stream; anything else: cancel it.
            self._close(cancel=not self._finished)
