"""The grounding rules on hand-made answers: numbers as numbers, names and codes as whole words,
citations apart, refusals recognised, and the end_signal summary."""

from __future__ import annotations

import pytest
from ragbot import grounding

SOURCES = [
    "Warranty: every Harvest Tern HT-7 has a 26-month warranty. Error E-204: basket overload.",
    "The company employs 214 people in Tromsø. Lumenfold Robotics was founded in 2019.",
]


def test_numbers_compare_as_numbers_in_any_spelling():
    assert [(f.text, f.value) for f in grounding.numbers("It took twenty-two days and 1,200 hours.")] == [
        ("twenty-two", 22.0),
        ("1,200", 1200.0),
    ]
    assert grounding.numbers("Two hundred and fourteen people")[0].value == 214.0
    assert grounding.contains("a 26-month warranty", "26 months")
    assert grounding.contains("twenty-two drones", "22") and grounding.contains("22 drones", "twenty-two")
    assert not grounding.contains("about 5 hectares", "6 hectares")


def test_names_and_codes_but_not_sentence_openings_or_citations():
    facts = grounding.facts("The HT-7 shows E-204 [1]. Ingrid is in Tromsø, at Lumenfold's.")
    assert [(f.text, f.kind) for f in facts] == [
        ("HT-7", "name"),
        ("E-204", "name"),
        ("Tromsø", "name"),
        ("Lumenfold's", "name"),
    ]  # "The" and "Ingrid" open sentences; [1] is a citation, not the number 1
    assert facts[-1].value == "lumenfold"


def test_unsupported_lists_what_no_source_holds():
    answer = "The HT-7 has a 26-month warranty, or twenty-two months, from Lima [1]. Call 555 0199."
    assert [f.text for f in grounding.unsupported(answer, SOURCES)] == ["twenty-two", "Lima", "555", "0199"]
    assert grounding.unsupported("Lumenfold Robotics employs two hundred and fourteen people.", SOURCES) == []


@pytest.mark.parametrize(
    ("answer", "refused"),
    [
        ("The documents do not say.", True),
        ("I could not find that in the documents.", True),
        ("The price is not mentioned in the passages.", True),
        ("There is no information about it.", True),
        ("The HT-7 costs 18,900 euros [1].", False),
        ("It does not fly in heavy rain.", False),
    ],
)
def test_refusals_are_recognised(answer: str, refused: bool):
    assert grounding.is_refusal(answer) is refused


def test_summary_counts_facts_lists_unsupported_ones_and_valid_citations():
    answer = "It employs 214 people [2] and 300 robots [1][7]."
    assert grounding.summary(answer, SOURCES) == {
        "facts": 2,
        "unsupported": ["300"],
        "citations": [2, 1],
        "refused": False,
    }
    assert grounding.summary("Ask us later.", SOURCES, refusal_text="Ask us later.")["refused"] is True
