"""Command-line chat: `python -m client.cli "question"`, or no question for an interactive session;
`--status` prints what the chatbot knows (each document's state, chunks, time last indexed, reasons).

The answer streams to stdout; then, when the servable checks answers, a line naming its numbers and
names that no source holds; then its sources, numbered [n] as the answer cites them. Ctrl-C stops the
answer in the server too.
Exit codes: 0 ok, 1 the server returned an error, 2 bad command line or question (not valid UTF-8),
3 the server is not reachable, 130 stopped by Ctrl-C, 141 the output was closed before the end (`| head`;
the answer is cancelled in the server too).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import TextIO

from client.ovms_client import (
    DEFAULT_MODEL,
    DEFAULT_URL,
    EndSignal,
    GenerationSettings,
    Grounding,
    IndexStatus,
    Message,
    OvmsClient,
    Sources,
    StreamError,
    TextPiece,
)

EXIT_OK = 0
EXIT_SERVER_ERROR = 1
EXIT_BAD_INPUT = 2  # as argparse exits for a bad command line
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130
EXIT_OUTPUT_CLOSED = 141  # as a shell reports a process ended by SIGPIPE
HIGHLIGHT = "\x1b[1;33m"  # bold yellow
RESET = "\x1b[0m"


@dataclass
class Turn:
    """What one question produced."""

    answer: str = ""
    sources: Sources | None = None
    end: EndSignal | None = None
    error: str | None = None
    exit_code: int = EXIT_OK


def format_sources(sources: Sources) -> str:
    """Sources as numbered plain-text lines."""
    lines = ["Sources:"]
    for number, source in enumerate(sources.items, 1):
        title = f"{source.title} - " if source.title and source.title != source.document else ""
        snippet = " ".join(source.snippet.split())
        lines.append(f"  [{number}] {title}{source.document} (score {source.score:.2f})")
        if snippet:
            lines.append(f"      {snippet}")
    return "\n".join(lines)


def format_index_status(status: IndexStatus) -> str:
    """The index status as plain-text lines: a summary, then one line per document."""
    lines = [status.summary()]
    for d in status.documents:
        reason = f": {d.reason}" if d.reason else ""
        lines.append(f"  {d.state:<8} {d.chunks:>5} chunks  {d.indexed_at or '-':<20}  {d.document}{reason}")
    return "\n".join(lines)


def print_index_status(client: OvmsClient, out: TextIO, err: TextIO) -> int:
    status = client.index_status()
    if isinstance(status, StreamError):
        err.write(f"error: {status.message}\n")
        return EXIT_UNREACHABLE if status.unreachable else EXIT_SERVER_ERROR
    out.write(format_index_status(status) + "\n")
    return EXIT_OK


def use_color(out: TextIO) -> bool:
    """ANSI colors on a terminal only (not in a file or a pipe), unless NO_COLOR asks for none."""
    return out.isatty() and not os.environ.get("NO_COLOR")


def unsupported_line(grounding: Grounding, color: bool) -> str:
    """The answer's facts that no source holds, highlighted on a terminal so that they are not missed."""
    line = f"not found in the sources: {', '.join(grounding.missing)}"
    return f"{HIGHLIGHT}{line}{RESET}" if color else line


def text_problem(question: str) -> str | None:
    """Why `question` cannot be sent, or None: bytes that are not UTF-8 (from a terminal in another
    encoding) reach Python as lone surrogates, which have no UTF-8 form."""
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as e:
        return (
            f"the question is not valid UTF-8 text (character {e.start + 1}); "
            "set the terminal to UTF-8 (e.g. LANG=C.UTF-8) and ask again"
        )
    return None


def ask(
    client: OvmsClient, messages: list[Message], settings: GenerationSettings, out: TextIO, err: TextIO
) -> Turn:
    """Stream one answer to `out`; Ctrl-C cancels it in the server."""
    turn = Turn()
    pieces: list[str] = []
    stream = client.ask(messages, settings)
    try:
        for event in stream:
            if isinstance(event, TextPiece):
                pieces.append(event.text)
                out.write(event.text)
                out.flush()
            elif isinstance(event, Sources):
                turn.sources = event
            elif isinstance(event, EndSignal):
                turn.end = event
            elif isinstance(event, StreamError):
                turn.error = event.message
                turn.exit_code = EXIT_UNREACHABLE if event.unreachable else EXIT_SERVER_ERROR
    except KeyboardInterrupt:
        stream.cancel()
        turn.error = "Stopped: the answer was cancelled."
        turn.exit_code = EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`| head`): no one wants the rest of the answer
        stream.cancel()
        raise
    turn.answer = "".join(pieces)
    if turn.answer:
        out.write("\n")
    grounding = turn.end.grounding if turn.end else None
    if grounding is not None and grounding.missing:
        out.write(unsupported_line(grounding, use_color(out)) + "\n")
    if turn.sources and turn.sources.items:
        out.write(format_sources(turn.sources) + "\n")
    if turn.end is not None:
        if turn.end.problem and turn.error is None:
            turn.error = turn.end.problem
            turn.exit_code = EXIT_SERVER_ERROR
        note = " (stopped at the max new tokens limit)" if turn.end.finish_reason == "length" else ""
        err.write(f"[{turn.end.summary()}]{note}\n")
    if turn.error:
        err.write(f"error: {turn.error}\n" if turn.exit_code != EXIT_INTERRUPTED else f"{turn.error}\n")
    out.flush()
    return turn


def interactive(client: OvmsClient, settings: GenerationSettings, out: TextIO, err: TextIO) -> int:
    """Chat until EOF (Ctrl-D) or Ctrl-C at the prompt; the conversation is sent with each question."""
    status = client.status()
    if not status.live:
        err.write(f"error: {status.message}\n")
        return EXIT_UNREACHABLE
    err.write(f"{status.message} Ctrl-C stops an answer, Ctrl-D quits.\n")
    history: list[Message] = []
    while True:
        try:
            question = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            err.write("\n")
            return EXIT_OK
        if not question:
            continue
        if problem := text_problem(question):
            err.write(f"error: {problem}\n")
            continue
        messages = [*history, {"role": "user", "content": question}]
        turn = ask(client, messages, settings, out, err)
        if turn.answer and turn.exit_code in (EXIT_OK, EXIT_INTERRUPTED):
            history = [*messages, {"role": "assistant", "content": turn.answer}]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m client.cli",
        description="Ask the RAG chatbot a question over KServe gRPC streaming.",
        epilog="Exit codes: 0 ok, 1 server error, 2 bad command line or question, 3 server not reachable, "
        "130 stopped by Ctrl-C, 141 the output was closed (the answer is cancelled too).",
    )
    parser.add_argument("question", nargs="?", help="the question; without it, an interactive session")
    parser.add_argument(
        "--url",
        "--ovms_url",
        default=DEFAULT_URL,
        help=f"gRPC host:port of the server ({DEFAULT_URL}), or of several replicas: host1:9000,host2:9000 "
        "or dns:///name:9000",
    )
    parser.add_argument("--model-name", default=DEFAULT_MODEL, help=f"graph name ({DEFAULT_MODEL})")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="answer length limit in tokens")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature, 0 = greedy")
    parser.add_argument("--no-rag", action="store_true", help="answer without retrieving documents")
    parser.add_argument(
        "--status", action="store_true", help="print the documents the chatbot knows, failures and rebuilds"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.status and args.question is not None:
        sys.stderr.write("error: give a question or --status, not both\n")
        return EXIT_BAD_INPUT
    try:
        client = OvmsClient(args.url, args.model_name)
    except ValueError as exc:
        sys.stderr.write(f"error: --url: {exc}\n")
        return EXIT_BAD_INPUT
    settings = GenerationSettings(args.max_new_tokens, args.temperature, not args.no_rag)
    try:
        if args.status:
            return print_index_status(client, sys.stdout, sys.stderr)
        if args.question is None:
            sys.stdin.reconfigure(errors="surrogateescape")  # bytes that are not UTF-8: a message, no crash
            return interactive(client, settings, sys.stdout, sys.stderr)
        if problem := text_problem(args.question):
            sys.stderr.write(f"error: {problem}\n")
            return EXIT_BAD_INPUT
        turn = ask(client, [{"role": "user", "content": args.question}], settings, sys.stdout, sys.stderr)
        return turn.exit_code
    except BrokenPipeError:
        # Nothing more can be written; keep the interpreter's final flush from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OUTPUT_CLOSED


if __name__ == "__main__":
    sys.exit(main())
