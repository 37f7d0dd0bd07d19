"""The Gradio page in headless Chromium, against the real local server serving the slow test servable."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.client.conftest import GROUNDED_QUESTION, SLOW_CONFIG

pytestmark = pytest.mark.browser
# A long answer: 2048 words, one every 0.05 s, still streams whenever a loaded machine gets to look.
LONG = 2048

ANSWER = "#chat [data-testid='bot']:not(.thought *)"
SOURCES = "#chat .thought"


def open_settings(page: Page) -> None:
    """Unfold the settings and wait until the slider has mounted with its default, so typing is not lost."""
    page.click("#settings")
    for kind in ("number", "range"):
        expect(page.locator(f"#max-new-tokens input[type={kind}]")).to_have_value("256")


def set_max_new_tokens(page: Page, value: int) -> None:
    field = page.locator("#max-new-tokens input[type=number]")
    field.fill(str(value))
    field.press("Enter")
    expect(page.locator("#max-new-tokens input[type=range]")).to_have_value(str(value))


def ask(page: Page, question: str) -> None:
    page.fill("#question textarea", question)
    page.press("#question textarea", "Enter")


def answer_text(page: Page, index: int) -> str:
    return page.locator(ANSWER).nth(index).inner_text()


def unfold_and_capture(page: Page, sources: Locator, shown: tuple[str, ...], screenshot: Path) -> None:
    """Open the sources, check they show `shown`, and take the screenshot once they have unfolded."""
    sources.locator(".title").click()
    for text in shown:
        expect(sources).to_contain_text(text)
    expect(sources.locator(".content")).to_be_visible()
    page.wait_for_timeout(500)  # the unfolding animation, for the screenshot
    page.screenshot(path=str(screenshot))


def test_page_streams_answers_with_sources_history_and_stop(slow_server, start_page, browser_page, artifacts):
    page = browser_page
    page.goto(start_page(slow_server.grpc_url))
    expect(page.locator("#status-line")).to_contain_text("Ready")
    open_settings(page)
    set_max_new_tokens(page, 48)

    ask(page, "How do I set it up?")
    # The sources appear under the answer, folded until opened.
    sources = page.locator(SOURCES).first
    expect(sources).to_contain_text("Sources (2)")
    expect(sources).not_to_contain_text("About: How do I set it up?")
    # When it ends: timing from end_signal.
    expect(page.locator(ANSWER).first).to_contain_text("tokens/s")
    assert "first token" in answer_text(page, 0)
    # The servable sent no grounding: nothing is highlighted or noted.
    expect(page.locator(ANSWER).first.locator("mark, sup")).to_have_count(0)
    assert "not found in the sources" not in answer_text(page, 0)
    shown = ("About: How do I set it up?", "guide/setup.md", "score 0.91")
    unfold_and_capture(page, sources, shown, artifacts / "client-page.png")

    # A long answer grows word by word (it is far from its end when read early), and is stopped from
    # the page: the server's generator is closed too.
    set_max_new_tokens(page, LONG)
    ask(page, "Tell me everything.")
    expect(page.locator(ANSWER).nth(1)).to_contain_text("word3")
    early = answer_text(page, 1)
    expect(page.locator(ANSWER).nth(1)).to_contain_text("word30")
    assert len(answer_text(page, 1)) > len(early)
    page.click("#stop")
    expect(page.locator(ANSWER).nth(1)).to_contain_text("Stopped.")
    cancelled = slow_server.log.wait_for_cancellations()
    assert len(cancelled) == 1
    assert cancelled[0]["question"] == "Tell me everything." and cancelled[0]["words_sent"] < LONG
    page.screenshot(path=str(artifacts / "client-page-stopped.png"))

    # A failure in the middle of an answer: the words so far, then a plain message.
    ask(page, "What if it fail midway?")
    expect(page.locator(ANSWER).nth(2)).to_contain_text("failed in the middle of the answer")
    assert answer_text(page, 2).startswith("[turn 3] word1 word2 word3")
    assert "Traceback" not in page.locator("body").inner_text()

    # Multi-turn: the second question went with the first answer.
    second = slow_server.log.requests()[1]
    assert second["format"] == "json" and second["max_new_tokens"] == LONG
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    assert second["messages"][1]["content"].startswith("[turn 1] word1 word2")
    assert "tokens/s" not in second["messages"][1]["content"]
    assert answer_text(page, 1).startswith("[turn 2] word1")


def test_page_highlights_facts_no_source_holds_and_marks_citations(
    slow_server, start_page, browser_page, artifacts
):
    page = browser_page
    page.goto(start_page(slow_server.grpc_url))
    expect(page.locator("#status-line")).to_contain_text("Ready")
    ask(page, GROUNDED_QUESTION)
    answer = page.locator(ANSWER).first
    # When the answer ends, every occurrence of each fact that no source holds is highlighted.
    unsupported = answer.locator("mark.unsupported")
    expect(unsupported).to_have_count(3)
    expect(unsupported).to_have_text(["1,200", "1,200", "Lima"])
    for index in range(3):
        expect(unsupported.nth(index)).to_have_attribute("title", "not found in the sources")
        expect(unsupported.nth(index)).to_be_visible()
    expect(answer).to_contain_text("2 facts not found in the sources: 1,200, Lima")
    # [1] is a reference to source 1; [3] cites no source and stays text.
    citation = answer.locator("sup.citation")
    expect(citation).to_have_text(["[1]"])
    expect(citation).to_have_attribute("title", "source 1: Setup guide")
    expect(answer).to_contain_text("send it to Lima [3].")
    # The sources are numbered to match, with the passages the model was given.
    sources = page.locator(SOURCES).first
    shown = ("[1] Setup guide", "[2] FAQ", "The HT-7 flies 47 minutes on one battery.")
    unfold_and_capture(page, sources, shown, artifacts / "client-page-grounding.png")


def test_page_says_plainly_when_the_server_is_down_and_works_once_it_is_back(
    unused_port, ovms_server, tmp_path, start_page, browser_page, artifacts
):
    page = browser_page
    page.goto(start_page(f"127.0.0.1:{unused_port}"))
    expect(page.locator("#status-line")).to_contain_text("Server down")
    ask(page, "Is anyone there?")
    expect(page.locator(ANSWER).first).to_contain_text("is not reachable")
    page.screenshot(path=str(artifacts / "client-page-server-down.png"))
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and "Exception" not in body

    ovms_server(SLOW_CONFIG, env={"CLIENT_TEST_LOG_DIR": str(tmp_path)}, args=["--port", str(unused_port)])
    expect(page.locator("#status-line")).to_contain_text("Ready")
    ask(page, "And now?")
    # The failed turn was not kept in the conversation: this is the first answered turn.
    expect(page.locator(ANSWER).nth(1)).to_contain_text("[turn 1] word1 word2")


def test_clear_mid_answer_cancels_it_and_the_conversation_stays_cleared(
    slow_server, start_page, browser_page
):
    page = browser_page
    page.goto(start_page(slow_server.grpc_url))
    expect(page.locator("#status-line")).to_contain_text("Ready")
    open_settings(page)
    set_max_new_tokens(page, LONG)  # so the clear lands mid-answer
    ask(page, "First question")
    expect(page.locator(ANSWER).first).to_contain_text("word5")
    page.click("#clear")
    # The server stops generating, and the page does not bring the cleared answer back (checked again
    # once the next answer is in).
    cancelled = slow_server.log.wait_for_cancellations()
    assert len(cancelled) == 1 and cancelled[0]["question"] == "First question"
    expect(page.locator(ANSWER)).to_have_count(0)
    # The next question goes alone: the cleared turn is not in the conversation.
    set_max_new_tokens(page, 16)
    ask(page, "Second question")
    expect(page.locator(ANSWER).first).to_contain_text("word2")
    assert slow_server.log.requests()[-1]["messages"] == [{"role": "user", "content": "Second question"}]
    expect(page.locator(ANSWER)).to_have_count(1)
