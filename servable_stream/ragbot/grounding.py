"""Facts in an answer (numbers and names) and whether the retrieved passages hold them.

A small model copies the right passage and then changes a number, or adds one from its own memory.
Checking every number and name of the answer against the sources shows users which ones nothing
supports. The rules are lexical on purpose: fast, predictable, and the same in the servable, the
clients and the evaluator. Numbers compare as numbers ("twenty-two" is 22, "1,200" is 1200);
names compare case-insensitively as whole words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}  # fmt: skip
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000, "billion": 1_000_000_000}
_NUMBER_WORDS = {**_UNITS, **_TENS, **_SCALES}
# "one" is far more often a pronoun or an article ("on one battery") than a claim: it is read as a
# number where it is compared ("contains"), never flagged on its own as unsupported.
_WEAK = {"one"}

# A code of letters and digits (HT-7, E-719, Nest-4, v2): a name, and its digits are not a number.
_L = r"[^\W\d_]"  # a letter, any script
_CODE = rf"{_L}+[-/]?\d[\w-]*|\d+{_L}+\d[\w-]*"
_TIME = r"\d{1,2}:\d{2}"
_DIGITS = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_WORD = rf"{_L}(?:{_L}|['’])*(?:-{_L}(?:{_L}|['’])*)*"
_TOKEN = re.compile(
    rf"(?P<code>\b(?:{_CODE}))|(?P<time>\b{_TIME}\b)|(?P<digits>(?<![\w.]){_DIGITS})|(?P<word>{_WORD})"
)
# Where a sentence (or a list item, a heading, a quoted line) starts, a capital is not a name.
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n\s*(?:[-*#>]+\s*|\d+[.)]\s*)?|[\"“(\[]\s*)$")


@dataclass(frozen=True)
class Fact:
    """A number or a name as it stands in a text: `value` is a float or a lower-cased name."""

    text: str
    start: int
    end: int
    kind: str  # "number" or "name"
    value: float | str


def _word_number(words: list[tuple[str, int, int]]) -> float:
    total, current = 0, 0
    for word, _, _ in words:
        value = _NUMBER_WORDS[word]
        if word in _SCALES:
            current = max(current, 1) * value
            if value >= 1000:
                total, current = total + current, 0
        else:
            current += value
    return float(total + current)


def _tokens(text: str) -> list[tuple[str, str, int, int]]:
    return [(m.lastgroup or "", m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _is_sentence_start(text: str, start: int) -> bool:
    return bool(_SENTENCE_START.search(text[max(0, start - 8) : start]))


def facts(text: str) -> list[Fact]:
    """The numbers and names of `text`, in order."""
    found: list[Fact] = []
    run: list[tuple[str, int, int]] = []  # number words being read ("twenty", "two")

    def close_run() -> None:
        if run and not (len(run) == 1 and run[0][0] in _WEAK | set(_SCALES)):
            start, end = run[0][1], run[-1][2]
            found.append(Fact(text[start:end], start, end, "number", _word_number(run)))
        run.clear()

    for kind, token, start, end in _tokens(text):
        lower = token.lower()
        parts = lower.split("-")
        if kind == "word" and all(part in _NUMBER_WORDS for part in parts):
            if run and text[run[-1][2] : start].strip() not in ("", "and"):
                close_run()
            run.extend((part, start, end) for part in parts)
            continue
        if kind == "word" and lower == "and" and run:
            continue
        close_run()
        if kind == "digits" and text[start - 1 : start] == "[" and text[end : end + 1] == "]":
            continue  # a citation, [2]
        if kind == "digits":
            found.append(Fact(token, start, end, "number", float(token.replace(",", ""))))
        elif kind == "time":
            hours, minutes = token.split(":")
            found.append(Fact(token, start, end, "number", int(hours) + int(minutes) / 100))
        elif kind == "code":
            found.append(Fact(token, start, end, "name", lower))
        elif _is_name(text, token, start):
            name = re.sub(r"['’]s$", "", lower)  # Lumenfold's: Lumenfold
            found.append(Fact(token, start, end, "name", name))
    close_run()
    return found


def _is_name(text: str, token: str, start: int) -> bool:
    if len(token) < 2 or not token[0].isupper() or token in ("I", "I'm", "I’m"):
        return False
    if token.isupper():
        return True  # an acronym, wherever it stands
    return not _is_sentence_start(text, start)


def numbers(text: str) -> list[Fact]:
    return [f for f in facts(text) if f.kind == "number"]


def names(text: str) -> list[Fact]:
    return [f for f in facts(text) if f.kind == "name"]


def _words(text: str) -> set[str]:
    """Lower-cased words, hyphenated ones both whole and in parts ("26-month": 26-month, 26, month)."""
    words = set()
    for word in re.findall(r"[^\W_][\w'’-]*", text.lower()):
        words.add(stem(word))
        words.update(stem(part) for part in word.split("-") if part)
    return words


def stem(word: str) -> str:
    """A lower-cased word without its plural s ("months": "month"; "glass" stays), apostrophes as '."""
    word = word.replace("’", "'")
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _number_values(text: str) -> set[float]:
    values = {f.value for f in numbers(text)}
    values.update(float(_UNITS[w]) for w in re.findall(r"[a-z]+", text.lower()) if w in _WEAK)
    return values


def contains(text: str, fact_text: str) -> bool:
    """Whether `text` states `fact_text`: its numbers as numbers, its other words case-insensitively
    (a plural s aside), in any form ("26-month" states "26 months")."""
    if not _number_values(fact_text) <= _number_values(text):
        return False
    rest = re.sub(r"\d[\d,.:]*", " ", fact_text.lower())
    wanted = {w for w in re.findall(rf"{_L}[\w'’]*", rest) if w not in _NUMBER_WORDS and w != "and"}
    return {stem(w) for w in wanted} <= _words(text)


def unsupported(answer: str, source_texts: list[str]) -> list[Fact]:
    """The answer's numbers and names that none of the sources holds."""
    values: set[float] = set()
    words: set[str] = set()
    for source in source_texts:
        values |= _number_values(source)
        words |= _words(source)
    missing = []
    for fact in facts(answer):
        if fact.kind == "number":
            if fact.value not in values:
                missing.append(fact)
        elif not all(stem(part) in words for part in re.split(r"[\s/]+", str(fact.value)) if part):
            missing.append(fact)
    return missing


_REFUSAL = re.compile(
    r"\b(?:do(?:es)?\s*n[o']t|did\s*n[o']t|can\s*n[o']t|cannot|could\s*n[o']t|unable\s+to)\s+"
    r"(?:say|says|mention|contain|include|provide|specify|state|cover|give|tell|answer|find|know|have)\b"
    r"|\bno\s+(?:information|mention|details?|data|answer)\b"
    r"|\bnot\s+(?:mentioned|specified|stated|provided|given|covered|included|found|available|listed)\b"
    r"|\bI\s+don'?t\s+know\b",
    re.IGNORECASE,
)


def is_refusal(text: str, refusal_text: str = "") -> bool:
    """Whether the answer says the documents do not cover the question."""
    if refusal_text and refusal_text.strip().lower() in text.lower():
        return True
    return bool(_REFUSAL.search(text.replace("’", "'")))


_CITATION = re.compile(r"\[(\d{1,2})\]")


def citations(answer: str, source_count: int) -> list[int]:
    """The source numbers the answer cites as [n] that exist, in order of first citation."""
    cited: list[int] = []
    for match in _CITATION.finditer(answer):
        number = int(match.group(1))
        if 1 <= number <= source_count and number not in cited:
            cited.append(number)
    return cited


def summary(answer: str, source_texts: list[str], refusal_text: str = "") -> dict:
    """The `grounding` field of end_signal."""
    return {
        "facts": len(facts(answer)),
        "unsupported": [f.text for f in unsupported(answer, source_texts)],
        "citations": citations(answer, len(source_texts)),
        "refused": is_refusal(answer, refusal_text),
    }
