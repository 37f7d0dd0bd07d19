"""Deterministic synthetic documents (readable pseudo-English about a made-up town) and their chunks."""

from __future__ import annotations

import random

from langchain_text_splitters import RecursiveCharacterTextSplitter

# Chunking used for every index the benchmark builds itself.
CHUNK_SIZE = 500
CHUNK_OVERLAP = 50

_SUBJECTS = (
    "The harbour bridge", "The town council", "The library committee", "The river survey", "The old mill",
    "The festival of lanterns", "The northern observatory", "The valley railway", "The community garden",
    "The fishing cooperative", "The school board", "The market square", "The lighthouse keeper",
    "The weather station", "The museum of crafts", "The regional hospital", "The cycling club",
)  # fmt: skip
_VERBS = (
    "approved", "inspected", "repaired", "reported on", "celebrated", "planned", "funded", "measured",
    "reopened", "extended", "reviewed", "documented", "welcomed", "studied", "replaced", "organised",
)  # fmt: skip
_OBJECTS = (
    "the new budget", "the winter maintenance schedule", "the water quality samples", "the evening concerts",
    "the stone arches", "the timetable for freight trains", "the rules for volunteers", "a telescope dome",
    "the annual harvest fair", "the flood barriers", "a collection of hand-woven rugs", "the night shifts",
    "the solar panels on the roof", "a guided walking tour", "the wooden benches", "the signal cables",
)  # fmt: skip
_DETAILS = (
    "after a long debate", "in early spring", "with help from local students", "despite the heavy rain",
    "for the third year in a row", "under a tight deadline", "as the mayor had promised",
    "following complaints from residents", "with a grant from the province", "before the summer season",
    "while the tourists watched", "using recycled materials", "at a public meeting on Tuesday",
)  # fmt: skip


def document(index: int, sentences: int) -> str:
    """Document `index`: a title line and `sentences` sentences, the same on every run."""
    rng = random.Random(index)
    lines = [f"Report {index}: notes from the town archive."]
    for _ in range(sentences):
        numbers = f"{rng.randint(2, 900)} people took part"
        lines.append(
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_DETAILS)}; "
            f"{numbers}."
        )
    return " ".join(lines)


def split(texts: list[str]) -> list[str]:
    splitter = RecursiveCharacterTextSplitter(chunk_size=CHUNK_SIZE, chunk_overlap=CHUNK_OVERLAP)
    return [chunk for text in texts for chunk in splitter.split_text(text)]


def chunks(count: int) -> list[str]:
    """About `count` chunks of about CHUNK_SIZE characters, cut from as many documents as needed."""
    out: list[str] = []
    index = 0
    while len(out) < count:
        out.extend(split([document(index, 60)]))
        index += 1
    return out[:count]
