"""What kind of fact a question asks for, and whether a passage holds one of that kind.

A passage can be the closest one to a question and still not answer it: "How much does the HT-7
weigh?" finds the product sheet, which gives a price, a flight time and a payload, but no weight. A
small model copies or rephrases what it is given, so the chain must know beforehand that the passage
lacks the answer. The kinds are the classic answer types of question answering: an amount of money
for "how much does it cost", a mass for "how heavy", a duration for "how long", a date for "when", a
name for "who" and "where", a count of the asked things for "how many". A question of no known kind
("What does error E-719 mean?") is never refused on these grounds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .grounding import Fact, facts, names, stem
from .passages import terms

_MONEY = r"euros?|eur|€|\$|£|dollars?|usd|pounds? sterling|gbp|cents?|francs?|kron(?:e|er|a|or)|yen|rupees?"
_MASS = r"kg|kilo(?:gram)?s?|g|grams?|tonnes?|tons?|lbs?|pounds?|ounces?|oz"
_DURATION = r"seconds?|secs?|s|minutes?|mins?|hours?|hrs?|h|days?|weeks?|months?|years?|nights?"
_LENGTH = (
    r"mm|cm|m|km|millimet(?:re|er)s?|centimet(?:re|er)s?|met(?:re|er)s?|kilomet(?:re|er)s?"
    r"|miles?|feet|foot|ft|inch(?:es)?"
)
_SPEED = rf"(?:{_LENGTH})\s*(?:per|an|a|/)\s*(?:{_DURATION})|km/h|kph|mph|knots?"
_TEMPERATURE = r"degrees?|°|celsius|fahrenheit|kelvin"
_CALENDAR = (
    "january february march april may june july august september october november december monday tuesday "
    "wednesday thursday friday saturday sunday weekend weekday spring summer autumn winter noon midnight "
    "morning afternoon evening night daily weekly monthly yearly annually am pm"
)
_DATE_WORDS = frozenset(_CALENDAR.split())

# The question's wording -> the kind of its answer; the first that matches wins.
_KINDS: list[tuple[str, re.Pattern[str]]] = [
    (kind, re.compile(pattern))
    for kind, pattern in [
        ("count", r"\bhow many\b"),
        ("speed", r"\b(?:speed|how fast)\b"),
        ("temperature", r"\b(?:temperature|how (?:hot|cold|warm)|degrees)\b"),
        ("mass", r"\b(?:weigh|weighs|weight|how heavy|payload)\b"),
        ("money", r"\b(?:cost|costs|price|priced|fare|fee|fees|pay|charge)\b"
                  r"|\bhow much (?:is|are) (?:a|an|the|one)\b"),
        ("length", r"\bhow (?:far|deep|high|tall|wide)\b|\b(?:altitude|depth|distance|height)\b"),
        ("duration", r"\bhow (?:long|quickly|soon)\b"),
        ("date", r"\b(?:when|what year|which year|what time|what date)\b"),
        ("person", r"^(?:and )?who\b"),
        ("place", r"^(?:and )?where\b|\bin which (?:town|city|country|village|port|region)\b"),
    ]
]  # fmt: skip

_UNIT_OF_KIND = {
    "money": _MONEY,
    "mass": _MASS,
    "duration": _DURATION,
    "length": _LENGTH,
    "speed": _SPEED,
    "temperature": _TEMPERATURE,
}
# Units a question can ask the answer in ("in kilometres per hour", "in Fahrenheit"): a passage
# giving the value in another unit does not answer it, as a small model cannot convert.
_ASKED_UNIT = re.compile(
    rf"\bin ((?:{_SPEED})|(?:{_TEMPERATURE})|(?:{_LENGTH})|(?:{_MASS})|(?:{_MONEY}))\s*\??\s*$", re.IGNORECASE
)
_COUNTED = re.compile(r"\bhow many ([a-z][a-z-]*)")
# "How many people" is answered by "412 employees" or "2,860 inhabitants"; "how many visitors" by
# visitors or people, not by inhabitants.
_PEOPLE_WORDS = (
    "people person employee staff worker inhabitant resident member student visitor passenger citizen"
)
_PEOPLE = frozenset(_PEOPLE_WORDS.split())
_ANYONE = frozenset(("people", "person"))
_PRONOUN_WORDS = "it its they them their there this that these those he she his her him"
_PRONOUNS = frozenset(_PRONOUN_WORDS.split())
# Words that say which kind is asked, not of what.
_KIND_WORDS = frozenset(
    ("cost", "price", "priced", "fare", "fee", "pay", "charge", "much", "weigh", "weight", "heavy")
)
# Kinds of amount that belong to one thing of several a passage names (a bundle's price, a payload's mass).
_OF_A_THING = ("money", "mass")


@dataclass(frozen=True)
class Need:
    """What an answer to the question must hold: a kind, the unit it is asked in, the counted noun."""

    kind: str | None
    unit: str | None = None
    counted: str | None = None
    focus: frozenset[str] = frozenset()  # the question's terms: a price must be of one of them


def need(question: str) -> Need:
    """The kind of fact `question` asks for (None: any passage may answer it)."""
    lowered = question.lower().strip()
    kind = next((kind for kind, pattern in _KINDS if pattern.search(lowered)), None)
    asked = _ASKED_UNIT.search(lowered)
    counted = _COUNTED.search(lowered)
    noun = stem(counted.group(1)) if kind == "count" and counted else None
    return Need(
        kind,
        unit=asked.group(1) if asked else None,
        counted=None if noun in _PRONOUNS or noun in ("of", "more", "other") else noun,
        focus=frozenset(terms(question) - _KIND_WORDS) if kind in _OF_A_THING else frozenset(),
    )


def _after(text: str, fact: Fact, words: int = 3) -> str:
    """The few words after a fact ("26-month warranty": "month warranty")."""
    rest = text[fact.end :].lstrip("-")
    return " ".join(re.findall(r"[^\W_][\w/°$€£-]*|[°$€£]", rest)[:words]).lower()


def _before(text: str, fact: Fact) -> str:
    return text[max(0, fact.start - 2) : fact.start].lower()


def _priced(passage: str, amount: Fact, previous: int, focus: frozenset[str]) -> bool:
    """Whether the amount is of a thing the question names: one of its terms stands before the
    amount in its sentence (after any amount before it there: a list of prices), or in the sentence
    before when this one opens with a pronoun ("It costs 212 euros"). "The HT-7 costs 18,900 euros,
    including a dock" gives no price of the dock."""
    sentences = re.split(r"(?<=[.!?;])\s+", passage[: amount.start])
    own = sentences[-1][max(0, previous - (amount.start - len(sentences[-1]))) :]
    if focus & terms(own):
        return True
    opening = re.findall(r"[a-z]+", own.lower())[:1]
    return len(sentences) > 1 and bool(set(opening) & _PRONOUNS) and bool(focus & terms(sentences[-2]))


def _is_year(fact: Fact) -> bool:
    return isinstance(fact.value, float) and 1000 <= fact.value <= 2200 and "," not in fact.text


def holds(passage: str, wanted: Need) -> bool:
    """Whether `passage` holds a fact of the wanted kind (in the asked unit, of the counted things)."""
    if wanted.kind is None:
        return True
    lowered = passage.lower()
    if wanted.unit and not re.search(rf"\b{re.escape(wanted.unit)}", lowered):
        return False
    found = facts(passage)
    numbers = [f for f in found if f.kind == "number"]
    if wanted.kind in _UNIT_OF_KIND:
        unit = re.compile(rf"^(?:{_UNIT_OF_KIND[wanted.kind]})\b", re.IGNORECASE)
        previous = 0
        for number in numbers:
            measured = unit.search(_after(passage, number)) or unit.search(_before(passage, number).strip())
            if measured and (not wanted.focus or _priced(passage, number, previous, wanted.focus)):
                return True
            previous = number.end
        return False
    if wanted.kind == "count":
        counts = [f for f in numbers if not _is_year(f)]
        if wanted.counted is None:
            return bool(counts)
        wanted_nouns = {wanted.counted}
        if wanted.counted in _PEOPLE:
            wanted_nouns |= _PEOPLE if wanted.counted in _ANYONE else _ANYONE
        return any({stem(w) for w in _after(passage, f).split()} & wanted_nouns for f in counts)
    if wanted.kind == "date":  # "in 2019", "on 14 March", "at 06:40", "9 to 5", "every morning"
        return bool(numbers) or bool(set(re.findall(r"[a-z]+", lowered)) & _DATE_WORDS)
    return any(f.kind == "name" and not any(c.isdigit() for c in f.text) for f in found)  # person, place


def subject(question: str, previous_question: str = "") -> list[str]:
    """The names and codes the question is about; a follow-up that names nothing ("And how many
    people work there?") is about what the question before it named."""
    own = [str(f.value) for f in names(question)]
    if own or not previous_question:
        return own
    if not set(re.findall(r"[a-z]+", question.lower())) & _PRONOUNS:
        return own
    return [str(f.value) for f in names(previous_question)]


def names_in(text: str, wanted: list[str]) -> bool:
    """Whether `text` holds every one of the names (lower-cased, whole words, a plural s aside)."""
    lowered = text.lower().replace("’", "'")
    return all(re.search(rf"(?<![\w-]){re.escape(name)}(?:s|'s)?(?![\w-])", lowered) for name in wanted)
