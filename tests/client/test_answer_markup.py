"""The page's Markdown for an answer and its footer, from the end_signal's grounding (no browser)."""

from __future__ import annotations

from client.app import answer_footer, answer_markdown, sources_markdown
from client.ovms_client import EndSignal, Grounding, Source, Sources

SOURCES = Sources(
    (Source("a.md", 'Guide "A" <b>', "snippet", 0.9, "the passage"), Source("b.md", "", "s", 0.5))
)
MARK = '<mark class="unsupported" title="not found in the sources">'


def test_without_grounding_the_answer_is_escaped_text_with_its_line_breaks():
    text = "  <b>1,200</b> *hours* [1]\n\n1. $$x$$"
    assert answer_markdown(text) == "\\<b\\>1,200\\</b\\> \\*hours\\* \\[1\\]\n\n1\\. \\$\\$x\\$\\$"
    assert "not found" not in answer_footer(EndSignal("stop"), stopped=False, error=None)


def test_each_occurrence_of_an_unsupported_fact_is_marked_after_escaping():
    grounding = Grounding(4, ("1,200", "HT-7", "Lima"), (), False)
    shown = answer_markdown("HT-7: 1,200 h, not 11,200 or 1,2000; <Lima> not Limassol; 1,200.", grounding)
    assert shown == (
        f"{MARK}HT\\-7</mark>: {MARK}1,200</mark> h, not 11,200 or 1,2000; "
        f"\\<{MARK}Lima</mark>\\> not Limassol; {MARK}1,200</mark>\\."
    )


def test_citations_of_existing_sources_become_superscripts_titled_with_the_source():
    grounding = Grounding(0, (), (1, 2), False)
    shown = answer_markdown("A [1], B [2], C [3].", grounding, SOURCES)
    assert shown == (
        'A <sup class="citation" title="source 1: Guide &quot;A&quot; &lt;b&gt;">\\[1\\]</sup>, '
        'B <sup class="citation" title="source 2: b.md">\\[2\\]</sup>, C \\[3\\]\\.'
    )


def test_the_footer_names_each_unsupported_fact_once_and_sources_are_numbered_to_match():
    end = EndSignal("stop", grounding=Grounding(3, ("1,200", "Lima", "1,200"), (), False))
    assert "*2 facts not found in the sources: 1,200, Lima*" in answer_footer(end, False, None)
    listed = sources_markdown(SOURCES)
    assert listed.startswith('**\\[1\\]** **Guide "A" \\<b\\>** (a\\.md) · score 0.90\n\n> the passage')
    assert "**\\[2\\]** **b\\.md** · score 0.50\n\n> s" in listed
