"""Passages: the retrieved chunks cut into windows of sentences and ranked against the question.

A small model given whole chunks copies the wrong number from them, or none. Given a few short
passages, each a sentence or two around a likely answer, it has less to choose from and cites what
it used. The rank mixes the embedding's similarity with the share of the question's words that the
passage holds, so names and codes ("E-204") count as much as their meaning.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from langchain_core.documents import Document
from numpy.typing import ArrayLike

from .grounding import stem

# A sentence ends at . ! ? before a capital, a digit or a quote, or at a line break.
_BOUNDARY = re.compile(r"(?<=[.!?])\s+(?=[\"“(\[]?[A-Z0-9])|\s*\n\s*")
_MARKUP = re.compile(r"^[#>*\-\s]+")
_TERM = re.compile(r"[^\W_][\w-]*")
# Question words that say nothing of the answer's place.
_STOP_WORDS = (
    "a an and any are as at be by can could did do does for from had has have how i in is it its many "
    "much of on one or our should that the their there this to was were what when where which who whom "
    "whose why will with would you your me my tell please about give know"
)
_STOP = frozenset(_STOP_WORDS.split())


@dataclass(frozen=True)
class Passage:
    """A window of sentences from one chunk, with the chunk's metadata and its rank score."""

    text: str
    metadata: dict
    score: float


def sentences(text: str) -> list[str]:
    """The sentences and lines of `text`, markdown list and heading marks taken off."""
    parts = (_MARKUP.sub("", part).strip() for part in _BOUNDARY.split(text))
    return [part for part in parts if part]


def tokens(text: str) -> list[str]:
    """The words that carry meaning, lower-cased, a plural s aside, in order (BM25's terms too)."""
    found = []
    for word in _TERM.findall(text.lower()):
        if word not in _STOP and (len(word) > 2 or any(c.isdigit() for c in word)):
            found.append(stem(word))
    return found


def terms(text: str) -> set[str]:
    return set(tokens(text))


def windows(chunks: list[Document], size: int) -> list[tuple[str, dict]]:
    """Every run of `size` consecutive sentences of each chunk (a shorter chunk is one window) that
    does not open with a question, cut before a question that follows; a window found in two
    overlapping chunks is kept once. A question the document asks (an FAQ's) belongs to the answer
    after it: in the window before, its words would rank that window for questions it does not
    answer, and an extract-mode answer could copy it."""
    seen: set[str] = set()
    found = []
    for chunk in chunks:
        parts = sentences(chunk.page_content)
        for start, sentence in enumerate(parts):
            if sentence.endswith("?") and start + 1 < len(parts):
                continue  # its answer starts the next window
            end = start + 1
            while end < min(start + size, len(parts)) and not parts[end].endswith("?"):
                end += 1
            if end - start < size and end == len(parts) and start and not parts[start - 1].endswith("?"):
                break  # the chunk's tail, which the window before holds
            text = " ".join(parts[start:end])
            if text and text not in seen:
                seen.add(text)
                found.append((text, chunk.metadata))
    return found


def rank(
    query: str,
    chunks: list[Document],
    embed_query: Callable[[str], list[float]],
    embed_passages: Callable[[list[str]], ArrayLike],
    size: int,
    lexical_weight: float,
) -> list[Passage]:
    """The windows of `chunks`, best first, scored 0..1 (at most): cosine similarity (normalised
    embeddings) plus `lexical_weight` times the share of the query's terms that the window holds,
    each term weighted by its rarity among the windows (a code found in one window counts more than
    "error" in ten), codes and numbers twice."""
    found = windows(chunks, size)
    if not found:
        return []
    vectors = np.asarray(embed_passages([text for text, _ in found]), dtype=np.float32)
    similarity = vectors @ np.asarray(embed_query(query), dtype=np.float32)
    held = [terms(text) for text, _ in found]
    weight = {}
    for term in terms(query):
        count = sum(term in h for h in held)
        if count:  # a word no window holds tells them apart no more than it is missing from all
            code = 2.0 if any(c.isdigit() for c in term) else 1.0  # a code or a number names one thing
            weight[term] = code * math.log(1 + len(found) / count)
    total = sum(weight.values())
    passages = []
    for (text, metadata), cosine, window_terms in zip(found, similarity, held, strict=True):
        overlap = sum(w for t, w in weight.items() if t in window_terms) / total if total else 0.0
        passages.append(
            Passage(text, metadata, (float(cosine) + lexical_weight * overlap) / (1 + lexical_weight))
        )
    return sorted(passages, key=lambda p: p.score, reverse=True)
