"""Gradio chat page for the RAG chatbot.

`python client/app.py --web_url localhost:9001 --ovms_url localhost:9000 [--model_name python_model]`
Answers stream token by token over KServe gRPC; the conversation so far goes with each question.
"""

from __future__ import annotations

import argparse
import math
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr

from client.ovms_client import (
    DEFAULT_MODEL,
    AnswerStream,
    EndSignal,
    GenerationSettings,
    Message,
    OvmsClient,
    ServerStatus,
    Sources,
    StreamError,
    TextPiece,
)

# Questions the bundled sample documents (servable_stream/documents/) answer.
EXAMPLES = [
    "How long does the Harvest Tern HT-7 fly on one battery?",
    "How long is the warranty of the HT-7?",
    "What does error code E-719 mean?",
    "Who founded Lumenfold Robotics, and when?",
    "Can I return a drone?",
]
WAITING = "…"
ChatValue = list[dict[str, Any]]


class ActiveAnswers:
    """The answer each browser session is streaming, so that its stop button can cancel it, and how many
    times each session cleared its conversation, so that an answer cleared away is not written back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, AnswerStream] = {}
        self._clears: dict[str, int] = {}

    def start(self, session: str, stream: AnswerStream) -> None:
        with self._lock:
            previous = self._streams.get(session)
            self._streams[session] = stream
        if previous is not None:
            previous.cancel()

    def finish(self, session: str, stream: AnswerStream) -> None:
        with self._lock:
            if self._streams.get(session) is stream:
                del self._streams[session]

    def cancel(self, session: str) -> None:
        with self._lock:
            stream = self._streams.pop(session, None)
        if stream is not None:
            stream.cancel()

    def clears(self, session: str) -> int:
        """How many times `session` has cleared its conversation."""
        with self._lock:
            return self._clears.get(session, 0)

    def clear(self, session: str) -> None:
        """Cancel the session's answer and count the clear, so that the answer is not written back."""
        with self._lock:
            self._clears[session] = self._clears.get(session, 0) + 1
        self.cancel(session)


class SharedStatus:
    """The server's readiness, asked at most once per `max_age` seconds however many pages are open."""

    def __init__(self, client: OvmsClient, max_age: float) -> None:
        self._client = client
        self._max_age = max_age
        self._lock = threading.Lock()
        self._checked_at = -math.inf
        self._status: ServerStatus | None = None

    def get(self) -> ServerStatus:
        with self._lock:
            if self._status is None or time.monotonic() - self._checked_at > self._max_age:
                self._status = self._client.status()
                self._checked_at = time.monotonic()
            return self._status


def plain(text: str) -> str:
    """Text shown as is in Markdown: every punctuation mark that Markdown (or LaTeX) could read escaped."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|>~<&$])", r"\\\1", " ".join(text.split()))


def sources_markdown(sources: Sources) -> str:
    """Each source: its document (a link when it is a URL), relevance score and snippet."""
    blocks = []
    for number, source in enumerate(sources.items, 1):
        name = plain(source.title or source.document)
        if source.document.startswith(("http://", "https://")):
            label = f"[{name}](<{source.document}>)"
        elif source.title and source.title != source.document:
            label = f"**{name}** ({plain(source.document)})"
        else:
            label = f"**{name}**"
        blocks.append(f"{number}. {label} · score {source.score:.2f}\n\n   > {plain(source.snippet)}")
    return "\n\n".join(blocks)


def status_markdown(status: ServerStatus) -> str:
    if status.model_ready:
        state = "Ready"
    elif status.busy:
        state = "Busy"
    else:
        state = "Not ready" if status.live else "Server down"
    return f"**{state}** · {status.message}"


def answer_footer(end: EndSignal | None, stopped: bool, error: str | None) -> str:
    """The line under an answer: why it ended early, and its speed from the server's end_signal."""
    notes = []
    if error:
        notes.append(error)
    elif stopped:
        notes.append("Stopped.")
    elif end is not None and end.problem:
        notes.append(end.problem)
    elif end is not None and end.finish_reason == "length":
        notes.append("(stopped at the max new tokens limit)")
    if end is not None:
        notes.append(end.summary())
    return "\n\n".join(f"*{note}*" for note in notes)


def build_page(client: OvmsClient, concurrency: int, status_every: float) -> gr.Blocks:
    """The chat page: status line, chat, stop button, examples and folded settings."""
    active = ActiveAnswers()
    status = SharedStatus(client, max_age=status_every / 2)

    def respond(
        question: str,
        chat: ChatValue,
        history: list[Message],
        max_new_tokens: float,
        temperature: float,
        use_rag: bool,
        request: gr.Request,
    ) -> Iterator[tuple[ChatValue, list[Message], str]]:
        question = question.strip()
        if not question:
            yield chat, history, ""
            return
        clears = active.clears(request.session_hash)

        def cleared() -> bool:
            """The conversation was cleared since this answer began."""
            return active.clears(request.session_hash) != clears

        chat = [*chat, {"role": "user", "content": question}, {"role": "assistant", "content": WAITING}]
        answer_at = len(chat) - 1
        yield chat, history, ""

        messages = [*history, {"role": "user", "content": question}]
        settings = GenerationSettings(int(max_new_tokens), float(temperature), bool(use_rag))
        stream = client.ask(messages, settings)
        active.start(request.session_hash, stream)
        if cleared():  # before the answer was registered
            stream.cancel()
        text, end, error = "", None, None
        try:
            for event in stream:
                if isinstance(event, TextPiece):
                    text += event.text
                    chat[answer_at] = {"role": "assistant", "content": text}
                elif isinstance(event, Sources) and event.items:
                    chat.append(
                        {
                            "role": "assistant",
                            "content": sources_markdown(event),
                            "metadata": {"title": f"Sources ({len(event.items)})", "status": "done"},
                        }
                    )
                elif isinstance(event, EndSignal):
                    end = event
                    continue
                elif isinstance(event, StreamError):
                    error = event.message
                    continue
                if cleared():
                    break
                yield chat, history, ""
        finally:
            active.finish(request.session_hash, stream)
        if cleared():
            # An update sent before the clear can reach the page after the clear's own: end cleared.
            yield [], [], gr.skip()
            return

        footer = answer_footer(end, stream.cancelled, error)
        shown = "\n\n".join(part for part in (text, footer) if part)
        chat[answer_at] = {"role": "assistant", "content": shown}
        if text and error is None:
            history = [*messages, {"role": "assistant", "content": text}]
        yield chat, history, ""

    def stop(request: gr.Request) -> None:
        active.cancel(request.session_hash)

    def clear_conversation(request: gr.Request) -> tuple[ChatValue, list[Message]]:
        active.clear(request.session_hash)
        return [], []

    def refresh_status() -> str:
        return status_markdown(status.get())

    with gr.Blocks(title="RAG chatbot · OpenVINO Model Server", analytics_enabled=False) as page:
        gr.Markdown(
            "## Document chatbot\nAnswers come from the bundled documents, served by OpenVINO Model Server."
        )
        status_line = gr.Markdown("Checking the server…", elem_id="status-line")
        history = gr.State([])
        chat = gr.Chatbot(
            label="Chat",
            elem_id="chat",
            buttons=["copy", "copy_all"],
            height=480,
            layout="bubble",
            feedback_options=None,
            placeholder="Ask a question about the documents.",
        )
        with gr.Row():
            question = gr.Textbox(
                show_label=False, placeholder="Your question", scale=6, elem_id="question", autofocus=True
            )
            send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
            stop_button = gr.Button("Stop", variant="stop", scale=1, elem_id="stop")
            clear = gr.Button("Clear", scale=1, elem_id="clear")
        gr.Examples(examples=EXAMPLES, inputs=question, label="Example questions")
        with gr.Accordion("Settings", open=False, elem_id="settings"):
            max_new_tokens = gr.Slider(
                16, 2048, value=256, step=16, label="Max new tokens", elem_id="max-new-tokens"
            )
            temperature = gr.Slider(
                0.0, 2.0, value=0.0, step=0.1, label="Temperature (0 = greedy)", elem_id="temperature"
            )
            use_rag = gr.Checkbox(value=True, label="Use the documents (RAG)", elem_id="use-rag")

        ask_inputs = [question, chat, history, max_new_tokens, temperature, use_rag]
        ask_outputs = [chat, history, question]
        for trigger in (question.submit, send.click):
            trigger(
                respond,
                inputs=ask_inputs,
                outputs=ask_outputs,
                concurrency_limit=concurrency,
                concurrency_id="answer",
                show_progress="hidden",
            )
        stop_button.click(stop, queue=False)
        clear.click(clear_conversation, outputs=[chat, history], queue=False)
        chat.clear(clear_conversation, outputs=[chat, history], queue=False)
        timer = gr.Timer(status_every)
        timer.tick(refresh_status, outputs=status_line, concurrency_limit=None, show_progress="hidden")
        page.load(refresh_status, outputs=status_line, concurrency_limit=None, show_progress="hidden")
    return page.queue(default_concurrency_limit=concurrency)


def host_port(url: str, default_port: int) -> tuple[str, int]:
    """`host:port` (or `host`) -> (host, port)."""
    host, _, port = url.rpartition(":") if ":" in url else (url, "", str(default_port))
    return host or "0.0.0.0", int(port)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Gradio chat page for the RAG chatbot served by OVMS.")
    parser.add_argument("--web_url", default="localhost:9001", help="host:port the page is served on")
    parser.add_argument("--ovms_url", default="localhost:9000", help="gRPC host:port of the model server")
    parser.add_argument("--model_name", default=DEFAULT_MODEL, help="graph name served by the server")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="answers streamed at once by the page's queue; keep it within what the server runs at once "
        "(the servable's MAX_NUM_SEQS, the server's --max_streams)",
    )
    parser.add_argument("--status_every", type=float, default=5.0, help="seconds between readiness checks")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    host, port = host_port(args.web_url, 9001)
    page = build_page(OvmsClient(args.ovms_url, args.model_name), args.concurrency, args.status_every)
    page.launch(server_name=host, server_port=port, ssr_mode=False, footer_links=[])


if __name__ == "__main__":
    main()
