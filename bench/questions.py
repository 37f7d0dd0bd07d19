"""The evaluation's question sets. A set is a folder: `docs.txt` names its documents (docs.txt's
format, relative to the folder) and `questions.jsonl` holds one question a line (eval/README.md).

Every line is checked on load, and a bad one stops the run with its file, line and problem: a typo in
a hand-written set would otherwise score as a wrong answer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.answers import is_document
from bench.settings import servable_on_path

servable_on_path()
from ragbot.documents import SCHEME_RE, Entry, Fetcher, FetchLimits, parse_docs_file  # noqa: E402

QUESTIONS_FILE = "questions.jsonl"
DOCS_FILE = "docs.txt"
FIELDS = ("id", "question", "history", "facts", "document")
ROLES = ("system", "user", "assistant")

Message = dict[str, str]


class SetError(ValueError):
    """A set that cannot be evaluated; the message names the file (and line) and the problem."""


@dataclass(frozen=True)
class Question:
    """One line of questions.jsonl; `where` is its file:line for messages."""

    set_name: str
    where: str
    id: str
    question: str
    history: tuple[Message, ...]
    facts: tuple[str, ...]
    document: str | None

    @property
    def answerable(self) -> bool:
        return self.document is not None

    @property
    def follow_up(self) -> bool:
        return bool(self.history)

    def messages(self) -> list[Message]:
        """The conversation as the client sends it: the fixed history, then the question."""
        return [*self.history, {"role": "user", "content": self.question}]


@dataclass(frozen=True)
class EvalSet:
    """A set's questions and its docs.txt entries, each a URL or the absolute path of a file or folder
    (with its line in docs.txt)."""

    name: str
    folder: Path
    entries: tuple[Entry, ...]
    questions: tuple[Question, ...]

    @property
    def local_entries(self) -> tuple[Path, ...]:
        return tuple(Path(entry.text) for entry in self.entries if not SCHEME_RE.match(entry.text))


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'"{field}" must be a non-empty string, got {json.dumps(value)}')
    return value


def _history(value: object) -> tuple[Message, ...]:
    if not isinstance(value, list):
        raise ValueError(f'"history" must be a list of messages, got {json.dumps(value)}')
    history = []
    for n, message in enumerate(value, start=1):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise ValueError(f'"history" item {n} must be {{"role": ..., "content": ...}}')
        if message["role"] not in ROLES:
            raise ValueError(f'"history" item {n}: role must be one of {", ".join(ROLES)}')
        history.append({"role": message["role"], "content": _text(message["content"], "content")})
    if history and history[-1]["role"] != "assistant":
        raise ValueError('"history" must end with the assistant\'s answer (the question is the next turn)')
    return tuple(history)


def parse_question(line: str, set_name: str, where: str) -> Question:
    """One JSONL line as a Question; SetError naming `where` and the problem."""
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SetError(f"{where}: not JSON: {exc}") from None
    try:
        if not isinstance(item, dict):
            raise ValueError("a line must be a JSON object")
        unknown = set(item) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(FIELDS)}")
        missing = [field for field in ("id", "question", "facts", "document") if field not in item]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        facts = item["facts"]
        if not isinstance(facts, list):
            raise ValueError(f'"facts" must be a list of strings, got {json.dumps(facts)}')
        document = item["document"]
        if document is not None:
            document = _text(document, "document")
        if bool(facts) != (document is not None):
            raise ValueError(
                'an answerable question has "facts" and a "document"; an unanswerable one has '
                '"facts": [] and "document": null'
            )
        return Question(
            set_name=set_name,
            where=where,
            id=_text(item["id"], "id"),
            question=_text(item["question"], "question"),
            history=_history(item.get("history", [])),
            facts=tuple(_text(fact, "facts item") for fact in facts),
            document=document,
        )
    except ValueError as exc:
        raise SetError(f"{where}: {exc}") from None


def load_questions(path: Path, set_name: str) -> tuple[Question, ...]:
    """Every question of a questions.jsonl (blank lines skipped); ids must be unique in the file."""
    questions: list[Question] = []
    seen: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        question = parse_question(line, set_name, f"{path}:{number}")
        if question.id in seen:
            raise SetError(f"{question.where}: id {question.id!r} was already used at {seen[question.id]}")
        seen[question.id] = question.where
        questions.append(question)
    if not questions:
        raise SetError(f"{path}: no questions")
    return tuple(questions)


def load_set(folder: Path) -> EvalSet:
    """The set in `folder`: its questions and its docs.txt entries, local ones checked to exist."""
    docs_file = folder / DOCS_FILE
    if not docs_file.is_file():
        raise SetError(f"{docs_file}: missing; it lists the set's documents (see eval/README.md)")
    entries = []
    for entry in parse_docs_file(docs_file.read_text(encoding="utf-8")):
        if SCHEME_RE.match(entry.text):
            entries.append(entry)
            continue
        path = (folder / entry.text).resolve()
        if not path.exists():
            raise SetError(f"{docs_file}:{entry.line}: no such file or folder: {path}")
        entries.append(Entry(entry.line, str(path)))
    if not entries:
        raise SetError(f"{docs_file}: lists no documents")
    return EvalSet(folder.name, folder, tuple(entries), load_questions(folder / QUESTIONS_FILE, folder.name))


def find_sets(root: Path) -> list[Path]:
    """The set folders under `root`: those with a questions.jsonl."""
    return sorted(path.parent for path in root.glob(f"*/{QUESTIONS_FILE}"))


def load_documents(sets: list[EvalSet], base: Path, limits: FetchLimits) -> dict[str, str]:
    """The full text of every document of `sets`, by the name the servable gives it in `sources`,
    loaded with the servable's own loaders (HTML without markup, the PDF's text).

    `base` stands for the servable's folder: no document lies under it, so a document is named by its
    absolute path (or URL), as in a server whose servable is a temporary copy. Every question's
    expected document must be among its set's documents."""
    texts: dict[str, str] = {}
    for eval_set in sets:
        fetcher = Fetcher(base, eval_set.local_entries, limits)
        loaded: list[str] = []
        for entry in eval_set.entries:
            documents, failures = fetcher.load_entry(entry)
            if failures:
                where = f"{eval_set.folder / DOCS_FILE}:{entry.line}"
                raise SetError(f"{where}: {failures[0].source}: {failures[0].reason}")
            texts |= {document.source: document.text for document in documents}
            loaded += [document.source for document in documents]
        for question in eval_set.questions:
            if question.document and not any(is_document(name, question.document) for name in loaded):
                raise SetError(
                    f"{question.where}: document {question.document!r} is none of the set's documents"
                )
    return texts
