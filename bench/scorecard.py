"""The evaluation's report: the measures of each configuration side by side, printed and written to
results.md with every answer and its marks, and a bar chart of the quality measures in results.png.

Each percentage is over the questions it applies to: retrieval, right answers and false refusals over
the answerable questions (follow-up retrieval over the answerable follow-ups), honest refusals over the
unanswerable ones, unsupported facts over every answer. A failed answer counts as wrong.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

from bench.evaluation import Run, marks
from bench.report import Table, markdown_table

ANSWER_CHARS = 160
# (key, column of the table, label of the chart or None when the chart leaves it out)
MEASURES = (
    ("retrieval", "Retrieval hit %", "retrieval hit"),
    ("follow_up_retrieval", "Follow-up retrieval hit %", "follow-up retrieval hit"),
    ("right", "Right % (answerable)", "right (answerable)"),
    ("honest_refusals", "Honest refusals % (unanswerable)", "honest refusals (unanswerable)"),
    ("false_refusals", "False refusals % (answerable)", "false refusals (answerable)"),
    ("loops", "Looping answers", "looping answers (of all)"),
    ("unsupported", "Unsupported fact %", "answers with an unsupported fact"),
    ("ttft_p50", "TTFT p50 ms", None),
    ("tokens_per_s_p50", "Tokens/s p50", None),
)
LEGEND = (
    "Retrieval hit: the expected document is among the answer's `sources`. Right: the answer states "
    "every expected fact (numbers compared as numbers, words case-insensitively). Honest refusal: on a "
    "question no document answers, the answer says the documents do not say; a false refusal says so "
    "on a question they answer. Looping: the same 4 words 3 or more times (twice in an answer cut at "
    "the token limit). Unsupported fact: a number or name of the answer found neither in the full text "
    "of any source document nor in the conversation. TTFT and tokens/s are the servable's end_signal "
    "figures. Percentages are over the questions each measure applies to."
)


def _percent(runs: list, applies: Callable, passes: Callable) -> float | None:
    chosen = [result for result in runs if applies(result)]
    return 100.0 * sum(bool(passes(result)) for result in chosen) / len(chosen) if chosen else None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def measures(run: Run) -> dict[str, float | None]:
    """The run's measures, by MEASURES key; None where no question applies."""
    results = run.results
    done = [r for r in results if r.answer.error is None]
    return {
        "retrieval": _percent(results, lambda r: r.question.answerable, lambda r: r.score.retrieval_hit),
        "follow_up_retrieval": _percent(
            results, lambda r: r.question.answerable and r.question.follow_up, lambda r: r.score.retrieval_hit
        ),
        "right": _percent(results, lambda r: r.question.answerable, lambda r: r.score.right),
        "honest_refusals": _percent(results, lambda r: not r.question.answerable, lambda r: r.score.refusal),
        "false_refusals": _percent(results, lambda r: r.question.answerable, lambda r: r.score.refusal),
        "loops": float(sum(r.score.loop is not None for r in results)),
        "unsupported": _percent(results, lambda r: True, lambda r: r.score.unsupported),
        "ttft_p50": _median([r.answer.ttft_ms for r in done]),
        "tokens_per_s_p50": _median([r.answer.tokens_per_s for r in done]),
    }


def _cell(value: float | None, key: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}" if key == "loops" else f"{value:.1f}"


def quality_table(runs: list[Run]) -> Table:
    rows = []
    for run in runs:
        found = measures(run)
        rows.append([run.config.name, *(_cell(found[key], key) for key, _, _ in MEASURES)])
    return Table("Answer quality", ("Configuration", *(column for _, column, _ in MEASURES)), rows)


def by_set_table(runs: list[Run], set_names: list[str]) -> Table:
    """Right answers per set: the invented set shows what the model could not know beforehand."""
    rows = []
    for run in runs:
        cells = []
        for name in set_names:
            value = _percent(
                run.results,
                lambda r, name=name: r.question.set_name == name and r.question.answerable,
                lambda r: r.score.right,
            )
            cells.append(_cell(value, "right"))
        rows.append([run.config.name, *cells])
    return Table("Right % (answerable) by set", ("Configuration", *set_names), rows)


def configs_table(runs: list[Run]) -> Table:
    rows = [
        [
            run.config.name,
            run.config.revision or "working tree",
            " ".join(f"{key}={value}" for key, value in run.config.env.items()) or "-",
            run.config.note,
        ]
        for run in runs
    ]
    return Table("Configurations", ("Configuration", "Servable", "Environment", "Note"), rows)


def _short(text: str) -> str:
    flat = " ".join(text.split())
    flat = flat if len(flat) <= ANSWER_CHARS else flat[: ANSWER_CHARS - 1] + "…"
    return flat.replace("<", "&lt;")


def answers_table(runs: list[Run]) -> Table:
    """Each question's answer under each configuration (the first ANSWER_CHARS characters) and its marks."""
    rows = []
    for i, first in enumerate(runs[0].results):
        question = first.question
        asked = (
            f"{_short(question.question)} (follow-up)" if question.follow_up else _short(question.question)
        )
        expected = ", ".join(question.facts) + f" ({question.document})" if question.answerable else "-"
        cells = [f"**{marks(run.results[i])}**: {_short(run.results[i].answer.text)}" for run in runs]
        rows.append([f"{question.set_name}/{question.id}", asked, expected, *cells])
    columns = ("Question", "Asked", "Expected", *(run.config.name for run in runs))
    return Table("Every answer", columns, rows)


def markdown(runs: list[Run], context: dict[str, str], set_names: list[str], plot: str | None) -> str:
    lines = ["# Answer quality", "", f"Command: `{context['command']}`", ""]
    lines += [f"- {key}: {value}" for key, value in context.items() if key != "command"]
    lines += ["", LEGEND]
    for table in (configs_table(runs), quality_table(runs), by_set_table(runs, set_names)):
        lines += ["", f"## {table.title}", "", *markdown_table(table)]
        if plot and table.title == "Answer quality":
            lines += ["", f"![answer quality by configuration]({plot})"]
    notes = [note for run in runs for note in run.notes]
    if notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    answers = answers_table(runs)
    lines += ["", f"## {answers.title}", "", "<details><summary>Each question under each configuration: "
              "the answer's marks and its beginning</summary>", "", *markdown_table(answers), "",
              "</details>"]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(runs: list[Run], path: Path, title: str) -> None:
    """Grouped bars: each quality measure (percent) with one bar per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charted = [(key, label) for key, _, label in MEASURES if label]
    figure, axis = plt.subplots(figsize=(12, 4.8))
    width = 0.8 / len(runs)
    for n, run in enumerate(runs):
        found = measures(run)
        found["loops"] = 100.0 * (found["loops"] or 0.0) / len(run.results)  # a count in the table
        values = [found[key] for key, _ in charted]
        offsets = [i + (n - (len(runs) - 1) / 2) * width for i in range(len(charted))]
        bars = axis.bar(offsets, [v or 0.0 for v in values], width, label=run.config.name)
        labels = ["n/a" if v is None else f"{v:.0f}" for v in values]
        axis.bar_label(bars, labels=labels, fontsize=7, padding=1)
    axis.set_xticks(range(len(charted)), [label.replace(" (", "\n(") for _, label in charted], fontsize=8)
    axis.set_ylim(0, 105)
    axis.set_ylabel("% of the questions it applies to")
    axis.set_title(f"{title}\nhigher is better for the first four, lower for the last three", fontsize=10)
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
