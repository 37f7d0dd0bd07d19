"""Gradio chat page for the RAG chatbot.

`python client/app.py --web_url localhost:9001 --ovms_url localhost:9000 [--model_name python_model]`
Answers stream token by token over KServe gRPC, shown as plain text; the conversation so far goes with
each question. When the servable checks answers, the numbers and names that no source holds are
highlighted and the citations [n] refer to the sources, numbered to match. The Documents panel shows
what the chatbot knows, asked again every few seconds while it is open.
"""

from __future__ import annotations

import argparse
import html
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import gradio as gr

from client.ovms_client import (
    DEFAULT_MODEL,
    AnswerStream,
    EndSignal,
    GenerationSettings,
    Grounding,
    IndexStatus,
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
MARKDOWN_SIGNS = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~<&$])")
# Indentation would make a line Markdown code, where escapes show as backslashes.
LINE_INDENT = re.compile(r"^[ \t]+", re.MULTILINE)
CITATION = r"\[(?P<citation>\d+)\]"
UNSUPPORTED_HINT = "not found in the sources"


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


T = TypeVar("T")


class Shared(Generic[T]):
    """What `ask()` answers (the server's readiness, the index status), asked at most once per `max_age`
    seconds however many pages are open."""

    def __init__(self, ask: Callable[[], T], max_age: float) -> None:
        self._ask = ask
        self._max_age = max_age
        self._lock = threading.Lock()
        self._checked_at = -math.inf
        self._value: T | None = None

    def get(self) -> T:
        with self._lock:
            if self._value is None or time.monotonic() - self._checked_at > self._max_age:
                self._value = self._ask()
                self._checked_at = time.monotonic()
            return self._value


def escaped(text: str) -> str:
    """Text shown as is in Markdown: every punctuation mark that Markdown (or LaTeX) could read escaped."""
    return MARKDOWN_SIGNS.sub(r"\\\1", text)


def plain(text: str) -> str:
    """Text shown as is, on one line."""
    return escaped(" ".join(text.split()))


def fact_pattern(fact: str) -> str:
    """`fact` as a regex that does not match inside a longer number or word, as "1,200" in "11,200"
    or "Lima" in "Limassol" would."""

    def same_kind(char: str) -> str:
        return r"\d" if char.isdigit() else r"[^\W\d_]" if char.isalpha() else ""

    before, after = same_kind(fact[0]), same_kind(fact[-1])
    return (f"(?<!{before})" if before else "") + re.escape(fact) + (f"(?!{after})" if after else "")


def answer_markdown(text: str, grounding: Grounding | None = None, sources: Sources | None = None) -> str:
    """The answer shown as is, line breaks kept. With the servable's grounding, the citations [n] of
    existing sources become superscripts titled with the source, and every occurrence of a fact that no
    source holds is highlighted; the text is escaped first, so only these tags are ever read as HTML."""
    text = LINE_INDENT.sub("", text)
    if grounding is None:
        return escaped(text)
    items = sources.items if sources else ()
    facts = sorted(set(grounding.unsupported), key=len, reverse=True)  # "1,200.5" before "1,200"
    pattern = re.compile("|".join([CITATION, *map(fact_pattern, facts)]))
    shown, done = [], 0
    for match in pattern.finditer(text):
        part = escaped(match[0])
        if match["citation"] is None:
            part = f'<mark class="unsupported" title="{UNSUPPORTED_HINT}">{part}</mark>'
        elif (number := int(match["citation"])) in grounding.citations and number <= len(items):
            source = items[number - 1]
            title = html.escape(f"source {number}: {source.title or source.document}")
            part = f'<sup class="citation" title="{title}">{part}</sup>'
        shown += [escaped(text[done : match.start()]), part]
        done = match.end()
    return "".join([*shown, escaped(text[done:])])


def sources_markdown(sources: Sources) -> str:
    """Each source, numbered [n] as the answer cites it: its document (a link when it is a URL), relevance
    score and the passage the model was given (its snippet from a servable that does not send it)."""
    blocks = []
    for number, source in enumerate(sources.items, 1):
        name = plain(source.title or source.document)
        if source.document.startswith(("http://", "https://")):
            label = f"[{name}](<{source.document}>)"
        elif source.title and source.title != source.document:
            label = f"**{name}** ({plain(source.document)})"
        else:
            label = f"**{name}**"
        passage = plain(source.text or source.snippet)
        blocks.append(f"**\\[{number}\\]** {label} · score {source.score:.2f}\n\n> {passage}")
    return "\n\n".join(blocks)


def status_markdown(status: ServerStatus) -> str:
    if status.model_ready:
        state = "Ready"
    elif status.busy:
        state = "Busy"
    else:
        state = "Not ready" if status.live else "Server down"
    return f"**{state}** · {status.message}"


def documents_markdown(status: IndexStatus | StreamError) -> str:
    """The index status: a summary line, then a table of the documents, each failure with its reason."""
    if isinstance(status, StreamError):
        return f"*{plain(status.message)}*"
    rows = ["| Document | State | Chunks | Last indexed |", "| --- | --- | --- | --- |"]
    for d in status.documents:
        name = plain(d.document) + (f" · {plain(d.title)}" if d.title and d.title != d.document else "")
        state = f"**{d.state}**: {plain(d.reason)}" if d.reason else d.state
        when = (d.indexed_at or "-").replace("T", " ").replace("Z", " UTC")
        rows.append(f"| {name} | {state} | {d.chunks} | {plain(when)} |")
    return f"{plain(status.summary())}\n\n" + "\n".join(rows)


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
    if end is not None and end.grounding is not None and end.grounding.missing:
        missing = end.grounding.missing
        count = f"{len(missing)} fact{'s' if len(missing) > 1 else ''}"
        notes.append(f"{count} {UNSUPPORTED_HINT}: {', '.join(plain(fact) for fact in missing)}")
    if end is not None:
        notes.append(end.summary())
    return "\n\n".join(f"*{note}*" for note in notes)


def build_page(client: OvmsClient, concurrency: int, status_every: float) -> gr.Blocks:
    """The chat page: status line, chat, stop button, examples, folded documents and settings."""
    active = ActiveAnswers()
    status = Shared(client.status, max_age=status_every / 2)
    index_status = Shared(client.index_status, max_age=status_every / 2)

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
        text, sources, end, error = "", None, None, None
        try:
            for event in stream:
                if isinstance(event, TextPiece):
                    text += event.text
                    chat[answer_at] = {"role": "assistant", "content": answer_markdown(text)}
                elif isinstance(event, Sources) and event.items:
                    sources = event
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
        answer = answer_markdown(text, end.grounding if end else None, sources)
        shown = "\n\n".join(part for part in (answer, footer) if part)
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

    def refresh_documents() -> str:
        return documents_markdown(index_status.get())

    def open_documents() -> tuple[str, gr.Timer]:
        return refresh_documents(), gr.Timer(active=True)

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
        with gr.Accordion("Documents", open=False, elem_id="documents") as documents:
            documents_view = gr.Markdown("Asking the server…", elem_id="documents-status")
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
        # The documents are asked for only while their panel is open.
        documents_timer = gr.Timer(status_every, active=False)
        documents_timer.tick(
            refresh_documents, outputs=documents_view, concurrency_limit=None, show_progress="hidden"
        )
        documents.expand(
            open_documents,
            outputs=[documents_view, documents_timer],
            concurrency_limit=None,
            show_progress="hidden",
        )
        documents.collapse(lambda: gr.Timer(active=False), outputs=documents_timer, queue=False)
    return page.queue(default_concurrency_limit=concurrency)


def host_port(url: str, default_port: int) -> tuple[str, int]:
    """`host:port` (or `host`) -> (host, port)."""
    host, _, port = url.rpartition(":") if ":" in url else (url, "", str(default_port))
    return host or "0.0.0.0", int(port)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Gradio chat page for the RAG chatbot served by OVMS.")
    parser.add_argument("--web_url", default="localhost:9001", help="host:port the page is served on")
    parser.add_argument(
        "--ovms_url",
        default="localhost:9000",
        help="gRPC host:port of the model server, or of several replicas: host1:9000,host2:9000 or "
        "dns:///name:9000 (balanced by gRPC's round_robin)",
    )
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
    try:
        client = OvmsClient(args.ovms_url, args.model_name)
    except ValueError as exc:
        raise SystemExit(f"error: --ovms_url: {exc}") from None
    page = build_page(client, args.concurrency, args.status_every)
    page.launch(server_name=host, server_port=port, ssr_mode=False, footer_links=[])


if __name__ == "__main__":
    main()
