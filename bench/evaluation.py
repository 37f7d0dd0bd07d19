"""The evaluation of answer quality: every configuration's servable in its own local server, every
question asked through `client.ovms_client` (tritonclient) as users ask, each answer scored by
bench/answers.py and the whole reported by bench/scorecard.py. `make eval`; `--help` for the flags.

A configuration (eval/configs.json) is a servable and its environment: `revision` null is the working
tree's servable_stream/, a git revision is servable_stream/ as it was at that commit. Each server
indexes the union of the chosen sets' documents through its own docs.txt and index folder in a
temporary copy, so the repository's servable_stream/ is never touched.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from bench.answers import Answer, Score, score
from bench.questions import EvalSet, FetchLimits, Question, load_documents
from bench.server import Server, make_servable_copy
from bench.settings import REPO, SERVABLE_DIR
from client.ovms_client import EndSignal, GenerationSettings, OvmsClient, Sources, StreamError, TextPiece

EVAL_DIR = REPO / "eval"
CONFIGS_FILE = EVAL_DIR / "configs.json"
CONFIG_FIELDS = ("name", "revision", "env", "note")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # also a folder name in the run's temporary folder

console = Console(width=None if sys.stdout.isatty() else 160)


@dataclass(frozen=True)
class Config:
    """One servable to evaluate: its code (`revision`, None for the working tree) and its env."""

    name: str
    revision: str | None
    env: dict[str, str]
    note: str = ""


@dataclass(frozen=True)
class Result:
    """One question asked under one configuration."""

    question: Question
    answer: Answer
    score: Score


@dataclass
class Run:
    """A configuration's results, and what the reader of the report should know about them."""

    config: Config
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Options:
    sets: list[EvalSet]
    configs: list[Config]
    llm_dir: Path
    embedding_dir: Path
    max_new_tokens: int | None  # None: the servable's default
    fetch_limits: FetchLimits


def load_configs(path: Path) -> list[Config]:
    """The configurations of `path`, checked: a list of {"name", "revision", "env", "note"}."""
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: must be a non-empty JSON list of configurations")
    configs: list[Config] = []
    for n, item in enumerate(items, start=1):
        where = f"{path}: configuration {n}"
        if not isinstance(item, dict) or set(item) - set(CONFIG_FIELDS) or "name" not in item:
            raise ValueError(f"{where}: must be an object with {', '.join(CONFIG_FIELDS)} (name required)")
        name, revision, env = item["name"], item.get("revision"), item.get("env", {})
        if not isinstance(name, str) or not NAME.match(name):
            raise ValueError(f"{where}: name must be letters, digits, '.', '_' or '-', got {name!r}")
        if any(config.name == name for config in configs):
            raise ValueError(f"{where}: name {name!r} is used twice")
        if revision is not None and (not isinstance(revision, str) or not revision.strip()):
            raise ValueError(f"{where} ({name}): revision must be a git revision or null, got {revision!r}")
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise ValueError(
                f'{where} ({name}): env must map variable names to strings, e.g. {{"TOP_K": "4"}}'
            )
        configs.append(Config(name, revision, env, str(item.get("note", ""))))
    return configs


def servable_source(revision: str | None, into: Path) -> Path:
    """The folder of the servable to copy: the working tree's, or servable_stream/ at `revision`
    extracted into `into` (`git archive`; the models are linked in by make_servable_copy)."""
    if revision is None:
        return SERVABLE_DIR
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, SERVABLE_DIR.name], cwd=REPO, capture_output=True
    )
    if archive.returncode != 0:
        raise RuntimeError(f"revision {revision!r}: {archive.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / SERVABLE_DIR.name


def ask(client: OvmsClient, question: Question, max_new_tokens: int | None) -> Answer:
    """Ask one question (greedy) and gather the streamed answer."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0)
    pieces: list[str] = []
    sources: tuple[str, ...] = ()
    for event in client.ask(question.messages(), settings):
        if isinstance(event, Sources):
            sources = tuple(source.document for source in event.items)
        elif isinstance(event, TextPiece):
            pieces.append(event.text)
        elif isinstance(event, StreamError):
            return Answer("".join(pieces), sources, "error", error=event.message)
        elif isinstance(event, EndSignal):
            text = "".join(pieces)
            if event.problem:
                return Answer(text, sources, event.finish_reason, error=event.problem)
            return Answer(text, sources, event.finish_reason, event.ttft_ms, event.tokens_per_s)
    return Answer("".join(pieces), sources, "error", error="the stream ended without an end_signal")


def _check_index(server: Server, status_file: Path, documents: int) -> None:
    """The server indexed every document the evaluator scores against, and nothing failed."""
    status = json.loads(status_file.read_text(encoding="utf-8"))
    failures = status.get("failures") or []
    if failures or status.get("document_count") != documents:
        raise RuntimeError(
            f"the server indexed {status.get('document_count')} of {documents} documents; "
            f"failures: {failures or 'none'}\n{server.log_tail()}"
        )


def marks(result: Result) -> str:
    """A short line of an answer's marks, for the progress log and the per-question table."""
    s, answer = result.score, result.answer
    if answer.error:
        return f"error: {answer.error}"
    if result.question.answerable:
        parts = ["right" if s.right else "wrong"] + ["refused"] * s.refusal
        parts += [] if s.retrieval_hit else ["retrieval miss"]
    else:
        parts = ["refused" if s.refusal else "answered"]
    parts += [f'loop "{s.loop}"'] if s.loop else []
    parts += [f"unsupported {', '.join(s.unsupported)}"] if s.unsupported else []
    return "; ".join(parts)


def evaluate(config: Config, options: Options, texts: dict[str, str], workdir: Path) -> Run:
    """Start `config`'s server, ask every question one at a time, score each answer, stop it."""
    run = Run(config)
    root = workdir / config.name
    root.mkdir()
    source = servable_source(config.revision, workdir / f"{config.name}-source")
    env = make_servable_copy(root, options.llm_dir, options.embedding_dir, source)
    entries = [entry.text for eval_set in options.sets for entry in eval_set.entries]
    (root / "docs.txt").write_text("\n".join(entries) + "\n", encoding="utf-8")
    roots = [str(path) for eval_set in options.sets for path in eval_set.local_entries]
    env |= {
        "DOCS_FILE": str(root / "docs.txt"),
        "RAG_INDEX_DIR": str(root / ".rag_index"),
        "DOCS_ALLOWED_ROOTS": os.pathsep.join(roots),
    } | config.env
    questions = [question for eval_set in options.sets for question in eval_set.questions]
    unknown: set[str] = set()
    refusal_text = env.get("REFUSAL_TEXT", os.environ.get("REFUSAL_TEXT", ""))
    server = Server(root, env)
    try:
        server.wait_ready()
        _check_index(server, root / ".rag_index" / "status.json", len(texts))
        client = OvmsClient(server.grpc_url)
        for n, question in enumerate(questions, start=1):
            answer = ask(client, question, options.max_new_tokens)
            unknown |= {name for name in answer.sources if name not in texts}
            support = [texts.get(name, "") for name in dict.fromkeys(answer.sources)]
            support += [message["content"] for message in question.messages()]
            marked = score(answer, question.facts, question.document, support, refusal_text)
            result = Result(question, answer, marked)
            run.results.append(result)
            console.log(
                f"{config.name} {n}/{len(questions)} {question.set_name}/{question.id}: {marks(result)}"
            )
    finally:
        server.stop()
    failed = [f"{r.question.id} ({r.answer.error})" for r in run.results if r.answer.error]
    if failed:
        run.notes.append(f"{config.name}: {len(failed)} answers failed: {'; '.join(failed)}")
    if unknown:
        run.notes.append(
            f"{config.name}: sources that are none of the loaded documents (their facts count as "
            f"unsupported): {', '.join(sorted(unknown))}"
        )
    return run


def run_all(options: Options) -> list[Run]:
    """Every configuration in turn; each document's text is loaded once, for all of them alike."""
    with tempfile.TemporaryDirectory(prefix="eval-") as tmp:
        workdir = Path(tmp)
        texts = load_documents(options.sets, workdir, options.fetch_limits)
        runs = []
        for config in options.configs:
            started = time.monotonic()
            console.log(f"{config.name}: starting the server ({config.revision or 'working tree'}) ...")
            runs.append(evaluate(config, options, texts, workdir))
            console.log(f"{config.name}: {time.monotonic() - started:.0f} s")
        return runs
