"""The kind of fact a question asks for, and which passages hold one: hand-made questions and
passages, each case a way a passage can be close to the question and still not answer it."""

from __future__ import annotations

import pytest
from ragbot.answer_kind import holds, names_in, need, subject

PRODUCT_SHEET = (
    "Flight time: 47 minutes on one battery. Maximum fruit payload: 3.2 kilograms in the basket. "
    "The Harvest Tern HT-7 costs 18,900 euros, including one Nest-4 dock and two Ember-9 batteries."
)


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("How much does the HT-7 cost?", "money"),
        ("What is the adult fare on the ferry?", "money"),
        ("How much is a bicycle ticket?", "money"),
        ("How heavy may each bag be?", "mass"),
        ("How much does the bell weigh?", "mass"),
        ("How long does the battery last?", "duration"),
        ("How far should people stay from the drone?", "length"),
        ("What is the maximum flight altitude?", "length"),
        ("What is the top speed in kilometres per hour?", "speed"),
        ("At what temperature is the loaf baked?", "temperature"),
        ("How many people work there?", "count"),
        ("For how many charge cycles are batteries covered?", "count"),
        ("When does the festival take place?", "date"),
        ("Who founded Corvane Instruments?", "person"),
        ("In which town did they found it?", "place"),
        ("What does error code E-719 mean?", None),
        ("Does Quarto Desk run on Linux?", None),
    ],
)
def test_the_wording_says_the_kind_of_the_answer(question, kind):
    assert need(question).kind == kind


def test_a_question_of_no_known_kind_is_answered_by_any_passage():
    assert holds("Anything at all.", need("What does error code E-719 mean?"))


def test_a_measure_needs_a_number_with_a_unit_of_its_kind():
    assert not holds(PRODUCT_SHEET, need("How fast does the HT-7 fly?"))
    assert holds("The drone flies at 40 km/h.", need("How fast does the HT-7 fly?"))
    assert holds(PRODUCT_SHEET, need("How long does the HT-7 fly on one battery?"))
    assert holds("The crossing takes seventy-three minutes.", need("How long is the crossing?"))
    assert holds("a 26-month warranty", need("How long is the warranty?"))
    assert not holds("The warranty covers the arms.", need("How long is the warranty?"))


def test_a_price_or_a_mass_must_be_of_what_the_question_names():
    # The sheet prices the HT-7 and names a payload's mass: no weight of the drone, no price of a dock.
    assert not holds(PRODUCT_SHEET, need("How much does the HT-7 drone itself weigh?"))
    assert not holds(PRODUCT_SHEET, need("How much does a spare Ember-9 battery cost?"))
    assert not holds(PRODUCT_SHEET, need("And what does the dock cost if I buy it separately?"))
    assert holds(PRODUCT_SHEET, need("How much does the Harvest Tern HT-7 cost?"))
    assert holds(PRODUCT_SHEET, need("What is the maximum fruit payload?"))
    # "It costs": the sentence before says what "it" is.
    passage = "The Meridian Pass gives unlimited travel for 9 days. It costs 212 euros for an adult."
    assert holds(passage, need("How much does the Meridian Pass cost?"))
    assert not holds("The ferry leaves at noon. It costs 5 euros.", need("How much does the pass cost?"))
    # A price list: each price belongs to the words after the price before it.
    prices = "Single licence: 49 euros. Team licence: 11 euros per seat per month."
    assert holds(prices, need("How much does a team licence cost?"))
    assert not holds("Support 49 euros, training 11 euros.", need("What does a team licence cost?"))


def test_a_count_must_count_the_asked_things():
    assert holds("Corvane employs 412 people.", need("How many people work for Corvane?"))
    assert holds("The island has 2,860 inhabitants.", need("How many people live on the island?"))
    assert not holds("The bakery was opened in 1958.", need("And how many people work there?"))
    assert not holds("The museum holds about 7,400 objects.", need("How many visitors does the museum have?"))
    assert not holds("The island has 2,860 inhabitants.", need("How many visitors does the island have?"))
    assert holds("About 9,000 people visit it.", need("How many visitors does the museum have?"))
    assert holds("The pass covers all 41 stations.", need("How many stations does it cover?"))
    # "How many of them": what is counted is the turn before's, so any count will do.
    assert holds("131 in Tromsø and 83 in Valencia.", need("How many of them work in Valencia?"))


def test_a_value_asked_in_a_unit_needs_that_unit():
    wanted = need("What is the top speed of the HT-7 in kilometres per hour?")
    assert wanted.unit == "kilometres per hour"
    assert not holds("Maximum wind speed for flight: 11 metres per second.", wanted)
    assert holds("Top speed: 54 kilometres per hour.", wanted)


def test_dates_and_names():
    assert holds("Open Monday to Friday.", need("When is the desk open?"))
    assert holds("Opening hours are 9 to 5.", need("When are the opening hours?"))
    assert not holds("The desk is in the harbour office.", need("When is the desk open?"))
    assert holds("It was founded by Maud Okonkwo-Lind.", need("Who founded Corvane?"))
    assert not holds("It was founded in 1987.", need("Who founded Corvane?"))


def test_the_subject_of_a_follow_up_is_the_question_before():
    before = "Who runs Brindlewick Bakery?"
    assert subject("How many people work at Brindlewick Bakery?") == ["brindlewick", "bakery"]
    assert subject("And how many people work there?", before) == ["brindlewick", "bakery"]
    assert subject("For how long?", before) == []  # names nothing, points at nothing
    assert subject("And the HT-7?", before) == ["ht-7"]


def test_names_are_whole_words():
    text = "The HT-7 is Lumenfold's drone; error E-550 means a jammed arm."
    assert names_in(text, ["ht-7", "lumenfold", "e-550"])
    assert not names_in(text, ["e-55"]) and not names_in(text, ["ht-70"]) and not names_in(text, ["lumen"])
