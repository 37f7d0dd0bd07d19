"""The evaluator's scoring on hand-made answers, its measures, and the checks of its sets and
configurations (no server, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.answers import Answer, is_document, repeated_phrase, score
from bench.evaluation import CONFIGS_FILE, EVAL_DIR, Config, Result, Run, load_configs
from bench.questions import (
    FetchLimits,
    Question,
    SetError,
    find_sets,
    load_documents,
    load_set,
    parse_question,
)
from bench.scorecard import measures

WARRANTY = "Warranty: every Harvest Tern HT-7 has a 26-month warranty. Batteries are covered for 800 cycles."
LIMITS = FetchLimits(timeout_s=5, max_bytes=10_000_000, max_redirects=0)


def question(facts: tuple[str, ...] = ("26 months",), document: str | None = "support.txt", **kw) -> Question:
    values = dict(set_name="s", where="q.jsonl:1", id="q", question="How long is the warranty of the HT-7?",
                  history=(), facts=facts, document=document)  # fmt: skip
    return Question(**(values | kw))


def scored(text: str, q: Question, sources: tuple[str, ...] = ("/docs/support.txt",), **kw) -> Result:
    answer = Answer(text, sources, kw.pop("finish_reason", "stop"), **kw)
    support = [WARRANTY, *(m["content"] for m in q.messages())]
    return Result(q, answer, score(answer, q.facts, q.document, support))


def test_a_phrase_said_again_and_again_is_a_loop() -> None:
    looping = "The warranty is 2 years, 12 months, 14 months, and 16 months. " * 3
    assert scored(looping, question()).score.loop == "the warranty is 2"
    assert (
        repeated_phrase("The HT-7 has a 26-month warranty. The HT-7 has a 26-month warranty.", "stop") is None
    )
    cut_off = "The HT-7 has a 26-month warranty. The HT-7 has a 26-month warranty. The HT-7"
    assert repeated_phrase(cut_off, "length") == "the ht 7 has"
    assert repeated_phrase("Yes.", "stop") is None


def test_a_refusal_is_honest_on_an_unanswerable_question_and_false_on_an_answerable_one() -> None:
    refusal = "The documents do not say."
    honest = scored(refusal, question(facts=(), document=None, question="What is the capital of Peru?"))
    assert honest.score.refusal and honest.score.right is None and honest.score.retrieval_hit is None
    false = scored(refusal, question())
    assert false.score.refusal and false.score.right is False
    answered = scored(
        "The capital of Peru is Lima.", question(facts=(), document=None, question="Capital of Peru?")
    )
    assert not answered.score.refusal and answered.score.unsupported == ("Lima",)
    own = Answer("Not in my files, sorry.", (), "stop")
    assert score(own, (), None, [], refusal_text="Not in my files, sorry.").refusal  # REFUSAL_TEXT
    assert not score(own, (), None, []).refusal


def test_number_words_match_the_number_of_a_fact() -> None:
    assert scored("It is covered for twenty-six months.", question()).score.right
    assert scored("The warranty lasts twenty-two months.", question(facts=("22 months",))).score.right
    assert scored("The warranty lasts 26 months.", question(facts=("22 months",))).score.right is False
    assert scored("Every HT-7 has a 26-month warranty.", question()).score.right
    assert scored("Covered for 800 cycles, 26 months", question(facts=("26 months", "800"))).score.right
    assert scored("Covered for 26 months", question(facts=("26 months", "800"))).score.right is False


def test_numbers_and_names_no_source_holds_are_unsupported() -> None:
    result = scored("The HT-7 flies for 1,200 hours and has a 26-month warranty from Oslo.", question())
    assert result.score.unsupported == ("1,200", "Oslo")
    assert scored("The warranty of the HT-7 is 26 months.", question()).score.unsupported == ()
    repeated = scored("It is 1,200 hours. It is 1,200 hours.", question())
    assert repeated.score.unsupported == ("1,200",)


def test_retrieval_hit_names_the_expected_document_by_path_ending_or_url() -> None:
    assert is_document("/work/servable_stream/documents/support.txt", "support.txt")
    assert is_document("/work/servable_stream/documents/support.txt", "documents/support.txt")
    assert not is_document("/work/servable_stream/documents/old-support.txt", "support.txt")
    assert is_document("https://example.com/a/guide.html", "https://example.com/a/guide.html")
    follow_up = question(
        facts=("800",), question="What about its batteries?",
        history=({"role": "user", "content": "How long is the warranty?"},
                 {"role": "assistant", "content": "26 months."}),
    )  # fmt: skip
    hit = scored("800 charge cycles.", follow_up)
    missed = scored("800 charge cycles.", follow_up, sources=("/docs/faq.html",))
    assert hit.score.retrieval_hit and hit.score.right and missed.score.retrieval_hit is False
    found = measures(Run(Config("c", None, {}), [hit, missed, scored("26 months", question())]))
    assert found["follow_up_retrieval"] == 50.0 and found["retrieval"] == pytest.approx(200 / 3)


def test_measures_are_percentages_of_the_questions_they_apply_to() -> None:
    unanswerable = question(facts=(), document=None, question="What is the capital of Peru?")
    results = [
        scored("It has a 26-month warranty.", question(), ttft_ms=100.0, tokens_per_s=50.0),
        scored("The documents do not say.", question(), ttft_ms=300.0, tokens_per_s=70.0),
        scored("The documents do not say.", unanswerable, ttft_ms=200.0, tokens_per_s=60.0),
        scored("It is Lima.", unanswerable, ttft_ms=200.0, tokens_per_s=60.0),
        scored("", question(), finish_reason="error", error="lost connection"),
    ]
    found = measures(Run(Config("c", None, {}), results))
    assert found["right"] == pytest.approx(100 / 3) and found["false_refusals"] == pytest.approx(100 / 3)
    assert found["honest_refusals"] == 50.0 and found["unsupported"] == 20.0 and found["loops"] == 0
    assert found["follow_up_retrieval"] is None
    assert found["ttft_p50"] == 200.0 and found["tokens_per_s_p50"] == 60.0  # failed answers left out


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"id": "a", "question": "Q?"', "not JSON"),
        ('["a"]', "must be a JSON object"),
        ('{"id": "a", "question": "Q?", "facts": [], "document": null, "answer": "x"}',
         "unknown field(s) answer"),
        ('{"id": "a", "question": "Q?", "facts": ["1"]}', "missing field(s) document"),
        ('{"id": "a", "question": "", "facts": [], "document": null}', '"question" must be a non-empty'),
        ('{"id": "a", "question": "Q?", "facts": "26", "document": "x.txt"}', '"facts" must be a list'),
        ('{"id": "a", "question": "Q?", "facts": [], "document": "x.txt"}', "an unanswerable one has"),
        ('{"id": "a", "question": "Q?", "facts": ["1"], "document": null}', "an answerable question has"),
        ('{"id": "a", "question": "Q?", "facts": [], "document": null, "history": [{"role": "user", '
         '"content": "Hi"}]}', "must end with the assistant"),
        ('{"id": "a", "question": "Q?", "facts": [], "document": null, "history": [{"role": "bot", '
         '"content": "Hi"}]}', "role must be one of"),
    ],
)  # fmt: skip
def test_a_bad_line_is_refused_with_its_file_line_and_problem(line: str, problem: str) -> None:
    with pytest.raises(SetError, match="questions.jsonl:7: ") as error:
        parse_question(line, "s", "questions.jsonl:7")
    assert problem in str(error.value)


def test_a_set_names_its_bad_lines_ids_and_documents(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("The Zorblax bell rings at noon.", encoding="utf-8")
    (tmp_path / "docs.txt").write_text("# the documents\ndocs/\n", encoding="utf-8")
    line = {"id": "a", "question": "When?", "facts": ["noon"], "document": "a.txt"}
    questions = tmp_path / "questions.jsonl"
    questions.write_text(f"{json.dumps(line)}\n\n{json.dumps(line)}\n", encoding="utf-8")
    with pytest.raises(SetError, match=r"questions.jsonl:3: id 'a' was already used at .*questions.jsonl:1"):
        load_set(tmp_path)
    questions.write_text(json.dumps(line | {"document": "b.txt"}) + "\n", encoding="utf-8")
    with pytest.raises(SetError, match=r"questions.jsonl:1: document 'b.txt' is none of the set's documents"):
        load_documents([load_set(tmp_path)], tmp_path / "base", LIMITS)
    (tmp_path / "docs.txt").write_text("docs/\nmissing.md\n", encoding="utf-8")
    with pytest.raises(SetError, match=r"docs.txt:2: no such file or folder"):
        load_set(tmp_path)


def test_the_bundled_sets_are_large_enough_and_their_documents_load() -> None:
    sets = [load_set(folder) for folder in find_sets(EVAL_DIR)]
    assert {s.name for s in sets} >= {"sample", "invented"}
    questions = [q for s in sets for q in s.questions]
    assert len(questions) >= 60
    assert sum(not q.answerable for q in questions) >= 10
    assert sum(q.follow_up for q in questions) >= 10
    assert len(list((EVAL_DIR / "invented" / "documents").iterdir())) >= 10
    texts = load_documents(sets, EVAL_DIR / "no-such-base", LIMITS)  # every expected document is found
    pdf = next(text for name, text in texts.items() if name.endswith("ht7-safety-data-sheet.pdf"))
    assert "11 metres per second" in pdf


def test_configurations_load_and_bad_ones_are_refused(tmp_path: Path) -> None:
    names = [config.name for config in load_configs(CONFIGS_FILE)]
    assert names[:3] == ["baseline", "today", "current"]
    bad = tmp_path / "configs.json"
    for items, problem in (
        ([], "non-empty JSON list"),
        ([{"name": "a b"}], "name must be letters"),
        ([{"name": "a"}, {"name": "a"}], "used twice"),
        ([{"name": "a", "env": {"TOP_K": 4}}], "env must map"),
        ([{"name": "a", "colour": "red"}], "must be an object with"),
    ):
        bad.write_text(json.dumps(items), encoding="utf-8")
        with pytest.raises(ValueError, match=problem):
            load_configs(bad)
