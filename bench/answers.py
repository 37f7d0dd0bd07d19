"""Scoring one answer of the evaluation: did retrieval find the expected document, does the answer
hold the expected facts, does it refuse, does it loop, and which of its numbers and names no source
holds.

Facts, numbers, names and refusals are read by the servable's own `ragbot.grounding`, so the
evaluator and the servable agree on what "twenty-two" or "the documents do not say" is.

A loop is a phrase said again and again: the same run of LOOP_WORDS words (lower-cased, punctuation
ignored) LOOP_REPEATS or more times, or twice in an answer cut off at the token limit (finish_reason
"length"), where a small model that repeats itself usually ends.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from bench.settings import servable_on_path

servable_on_path()
from ragbot import grounding  # noqa: E402

LOOP_WORDS = 4
LOOP_REPEATS = 3
LOOP_REPEATS_AT_LIMIT = 2


@dataclass(frozen=True)
class Answer:
    """What the server sent for one question; `error` when the stream failed."""

    text: str
    sources: tuple[str, ...]  # the "document" of each `sources` entry
    finish_reason: str
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class Score:
    """The marks of one answer; `retrieval_hit` and `right` are None for an unanswerable question."""

    retrieval_hit: bool | None
    right: bool | None
    refusal: bool
    loop: str | None  # the repeated phrase
    unsupported: tuple[str, ...]  # the answer's numbers and names that no source holds


def is_document(name: str, expected: str) -> bool:
    """Whether the source `name` (a path or URL) is the expected document: the same, or ending with it
    as a path ("support.txt", "documents/support.txt")."""
    return name == expected or name.endswith("/" + expected.lstrip("/"))


def repeated_phrase(text: str, finish_reason: str) -> str | None:
    """The phrase that makes the answer a loop (see the module docstring), or None."""
    words = re.findall(r"\w+", text.lower())
    runs = Counter(" ".join(words[i : i + LOOP_WORDS]) for i in range(len(words) - LOOP_WORDS + 1))
    if not runs:
        return None
    phrase, count = runs.most_common(1)[0]
    needed = LOOP_REPEATS_AT_LIMIT if finish_reason == "length" else LOOP_REPEATS
    return phrase if count >= needed else None


def score(
    answer: Answer, facts: Sequence[str], document: str | None, support: Sequence[str], refusal_text: str = ""
) -> Score:
    """Mark `answer` to a question whose right answer states `facts` from `document` (None: no
    document answers it). `support` is what the answer may take numbers and names from: the full text
    of the source documents, and the conversation itself (restating the question is not inventing).
    `refusal_text` is the servable's own refusal when a configuration sets one (REFUSAL_TEXT)."""
    answerable = document is not None
    if answer.error is not None:
        return Score(False if answerable else None, False if answerable else None, False, None, ())
    return Score(
        retrieval_hit=any(is_document(name, document) for name in answer.sources) if answerable else None,
        right=all(grounding.contains(answer.text, fact) for fact in facts) if answerable else None,
        refusal=grounding.is_refusal(answer.text, refusal_text),
        loop=repeated_phrase(answer.text, answer.finish_reason),
        unsupported=tuple(dict.fromkeys(f.text for f in grounding.unsupported(answer.text, list(support)))),
    )
