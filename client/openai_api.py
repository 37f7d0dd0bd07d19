"""OpenAI Chat Completions in front of the chatbot graph: `python -m client.openai_api --ovms_url HOST:PORT
--port N [--api-key KEY]`.

On real OVMS a graph with a Python node is reachable only through KServe, so chat tools that speak the
OpenAI API (the openai SDK, LangChain's ChatOpenAI, Open WebUI) reach it through this gateway: each
`POST /v1/chat/completions` is one KServe `ModelStreamInfer` stream (client/ovms_client.py), answered
whole or as server-sent events ending with `data: [DONE]`. The answer's sources travel in an extra
top-level `sources` field, on the last chunk or the whole response. A client that goes away cancels the
generation in the server. `GET /v1/models` lists the graph. Errors use OpenAI's error body.
"""

import argparse
import asyncio
import hmac
import json
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException

from client.ovms_client import (
    DEFAULT_MODEL,
    DEFAULT_URL,
    AnswerStream,
    EndSignal,
    Event,
    GenerationSettings,
    OvmsClient,
    Sources,
    StreamError,
    TextPiece,
)

DEFAULT_PORT = 9002
# The servable's own limits (servable_stream/ragbot/request.py), checked here so that 400 names the field.
MAX_TOKENS = 4096
MAX_STOP_STRINGS = 4
# end_signal finish reasons that OpenAI has; the others ("cancelled", "shutdown", "error") are errors.
FINISH_REASONS = {"stop": "stop", "length": "length"}


class OpenAIError(Exception):
    """An error answered with OpenAI's body: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    @property
    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status)


def stream_error(error: StreamError) -> OpenAIError:
    """The status that goes with a failed KServe stream: the request refused, the server away, or failed."""
    if error.invalid:
        return OpenAIError(400, error.message)
    return OpenAIError(503 if error.unreachable else 500, error.message)


def end_error(end: EndSignal) -> OpenAIError:
    """An answer the server ended abnormally: shut down (try again later) or failed."""
    return OpenAIError(503 if end.finish_reason == "shutdown" else 500, end.problem or end.finish_reason)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One turn; `developer` is OpenAI's newer name for `system`. Other fields (`name`) are ignored."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def turn(self) -> dict[str, str]:
        """The turn as the servable takes it."""
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The supported part of OpenAI's request, plus `use_rag` and `ignore_eos` (as vLLM has it); other
    fields are ignored as OpenAI-compatible servers do, except those asking for what this cannot do."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stop: str | list[Annotated[str, Field(min_length=1)]] | None = Field(None, max_length=MAX_STOP_STRINGS)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    tools: list[Any] | None = None
    use_rag: bool = True
    ignore_eos: bool = False

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, tools: list[Any] | None) -> list[Any] | None:
        if tools:
            raise ValueError("tool calls are not supported")
        return tools

    @field_validator("messages")
    @classmethod
    def _ends_with_the_question(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user":
            raise ValueError("the last message must have role 'user'")
        return messages

    def settings(self) -> GenerationSettings:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return GenerationSettings(
            max_new_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            use_rag=self.use_rag,
            top_p=self.top_p,
            seed=self.seed,
            stop=stop,
            ignore_eos=self.ignore_eos,
        )


def validation_error(exc: RequestValidationError) -> OpenAIError:
    """400 naming the bad field as OpenAI's `param` does (`messages[0].role`). Of a union's errors
    (`stop`: a string or a list of them) the deepest says most."""
    errors = exc.errors()
    if errors[0]["type"] == "json_invalid":
        return OpenAIError(400, f"The request body is not valid JSON: {errors[0]['ctx']['error']}.")
    error = max(errors, key=lambda e: len(e["loc"]))
    param = ""
    for part in error["loc"][1:]:  # after "body"; a union's branch names ("str", "list[...]") are skipped
        if isinstance(part, int):
            param += f"[{part}]"
        elif part != "str" and "[" not in part:
            param += f".{part}" if param else part
    message = error["msg"].removeprefix("Value error, ")
    if not param:
        return OpenAIError(400, f"Invalid request: {message}.")
    return OpenAIError(400, f"Invalid '{param}': {message}.", param=param)


async def events_of(stream: AnswerStream) -> AsyncIterator[Event]:
    """The stream's events on the event loop. The stream blocks, so a thread of its own drains it (a
    shared pool would cap the concurrent answers at its size). Leaving early cancels the answer."""
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue[Event | None] = asyncio.Queue()

    def drain() -> None:
        try:
            for event in stream:
                loop.call_soon_threadsafe(arrived.put_nowait, event)
        finally:
            loop.call_soon_threadsafe(arrived.put_nowait, None)

    threading.Thread(target=drain, name="answer", daemon=True).start()
    try:
        while (event := await arrived.get()) is not None:
            yield event
    finally:
        stream.cancel()


async def cancel_on_disconnect(request: Request, stream: AnswerStream) -> None:
    """Cancel `stream` when the HTTP client goes away (the body is read: only a disconnect comes next)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    stream.cancel()


def sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


class Completion:
    """The fields every object of one answer shares, and the answer's parts as they arrive."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.sources: list[dict[str, Any]] = []

    def head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def chunk(self, delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self.head("chat.completion.chunk") | {"choices": [choice]}

    @staticmethod
    def usage(end: EndSignal) -> dict[str, int]:
        prompt, completion = end.prompt_tokens, end.generated_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def take_sources(self, event: Sources) -> None:
        self.sources = [asdict(source) for source in event.items]


def create_app(ovms: OvmsClient, api_key: str | None = None) -> FastAPI:
    """The gateway's routes over `ovms`; with `api_key`, every route wants `Authorization: Bearer KEY`."""
    bearer = HTTPBearer(auto_error=False)

    def authorized(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if api_key is None:
            return
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise OpenAIError(401, "Incorrect or missing API key (send 'Authorization: Bearer KEY').",
                              code="invalid_api_key")  # fmt: skip

    app = FastAPI(title="RAG chatbot, OpenAI-compatible", dependencies=[Depends(authorized)])
    started = int(time.time())

    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return OpenAIError(exc.status_code, str(exc.detail)).response()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        model = {"id": ovms.model_name, "object": "model", "created": started, "owned_by": "ovms"}
        return {"object": "list", "data": [model]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        if body.model != ovms.model_name:
            raise OpenAIError(404, f"The model '{body.model}' does not exist; this server has "
                              f"'{ovms.model_name}'.", param="model", code="model_not_found")  # fmt: skip
        stream = ovms.ask([m.turn() for m in body.messages], body.settings())
        events = events_of(stream)
        completion = Completion(ovms.model_name)
        watcher = asyncio.create_task(cancel_on_disconnect(request, stream))
        streaming = False
        try:
            # Until the first event, a failure can still be an HTTP status (sources come first).
            first = await anext(events, None)
            if first is None:
                raise OpenAIError(500, "The answer was cancelled before it started.")
            if isinstance(first, StreamError):
                raise stream_error(first)
            if body.stream:
                streaming = True
                usage = body.stream_options is not None and body.stream_options.include_usage
                return StreamingResponse(
                    streamed(completion, first, events, usage), media_type="text/event-stream"
                )
            return await whole(completion, first, events)
        finally:
            watcher.cancel()
            if not streaming:
                await events.aclose()

    return app


async def whole(completion: Completion, first: Event, events: AsyncIterator[Event]) -> dict[str, Any]:
    """The whole answer as one `chat.completion`."""
    pieces: list[str] = []
    event: Event | None = first
    while event is not None:
        if isinstance(event, Sources):
            completion.take_sources(event)
        elif isinstance(event, TextPiece):
            pieces.append(event.text)
        elif isinstance(event, StreamError):
            raise stream_error(event)
        elif isinstance(event, EndSignal):
            if event.finish_reason not in FINISH_REASONS:
                raise end_error(event)
            message = {"role": "assistant", "content": "".join(pieces)}
            choice = {"index": 0, "message": message, "logprobs": None,
                      "finish_reason": FINISH_REASONS[event.finish_reason]}  # fmt: skip
            return completion.head("chat.completion") | {
                "choices": [choice], "usage": completion.usage(event), "sources": completion.sources
            }  # fmt: skip
        event = await anext(events, None)
    raise OpenAIError(500, "The server ended the answer without an end signal.")


async def streamed(
    completion: Completion, first: Event, events: AsyncIterator[Event], include_usage: bool
) -> AsyncIterator[str]:
    """The answer as `chat.completion.chunk` events; a failure midway is an error event, as OpenAI sends.
    Starlette stops this generator when the client goes away, which cancels the answer."""
    try:
        yield sse(completion.chunk({"role": "assistant", "content": ""}))
        event: Event | None = first
        while event is not None:
            if isinstance(event, TextPiece):
                yield sse(completion.chunk({"content": event.text}))
            elif isinstance(event, Sources):
                completion.take_sources(event)
            elif isinstance(event, StreamError):
                yield sse(stream_error(event).body)
                break
            elif isinstance(event, EndSignal):
                if event.finish_reason not in FINISH_REASONS:
                    yield sse(end_error(event).body)
                    break
                last = completion.chunk({}, FINISH_REASONS[event.finish_reason])
                yield sse(last | {"sources": completion.sources})
                if include_usage:
                    yield sse(completion.head("chat.completion.chunk") | {
                        "choices": [], "usage": completion.usage(event)
                    })  # fmt: skip
                break
            event = await anext(events, None)
        yield sse("[DONE]")
    finally:
        await events.aclose()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m client.openai_api", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ovms_url", default=DEFAULT_URL, help=f"gRPC host:port of the server ({DEFAULT_URL})"
    )
    parser.add_argument(
        "--model_name", default=DEFAULT_MODEL, help=f"graph name, the API's model ({DEFAULT_MODEL})"
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (0.0.0.0)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP port ({DEFAULT_PORT})")
    parser.add_argument("--api-key", "--api_key", dest="api_key", default=None,
                        help="require 'Authorization: Bearer KEY' (default: no key)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    app = create_app(OvmsClient(args.ovms_url, args.model_name), args.api_key)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
