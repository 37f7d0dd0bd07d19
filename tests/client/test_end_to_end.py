"""End to end: the client against the real servable (servable_stream/, default offline models) served by
the real local server, from a temporary copy with its own index."""

from __future__ import annotations

import openai
import pytest
from playwright.sync_api import expect

from client.app import EXAMPLES
from client.ovms_client import EndSignal, GenerationSettings, OvmsClient, Sources, StreamError, TextPiece

pytestmark = pytest.mark.slow

SHORT = GenerationSettings(max_new_tokens=48, temperature=0.0)


@pytest.fixture(scope="module")
def real_server(ovms_server_module, servable_copy):
    """One server for this module: loading the models and indexing the documents takes seconds."""
    server = ovms_server_module(servable_copy.config, env=servable_copy.env)
    assert OvmsClient(server.grpc_url).status().model_ready, server.log_text()
    return server


# The sample document that answers each example question of the page.
ANSWERED_BY = {
    "How long does the Harvest Tern HT-7 fly on one battery?": "harvest-tern-ht7.md",
    "How long is the warranty of the HT-7?": "support.txt",
    "What does error code E-719 mean?": "support.txt",
    "Who founded Lumenfold Robotics, and when?": "lumenfold-company.md",
    "Can I return a drone?": "faq.html",
}


def test_example_questions_get_answers_from_the_sample_documents(real_server, servable_copy):
    client = OvmsClient(real_server.grpc_url)
    base = servable_copy.config.parent
    assert sorted(EXAMPLES) == sorted(ANSWERED_BY)
    for question in EXAMPLES:
        events = list(client.ask([{"role": "user", "content": question}], SHORT))
        assert not [e for e in events if isinstance(e, StreamError)], (question, events)
        sources = events[0]
        assert isinstance(sources, Sources) and sources.items, question
        assert any(s.document.endswith(ANSWERED_BY[question]) for s in sources.items), (question, sources)
        for source in sources.items:
            assert (base / source.document).is_file() or source.document.startswith("http"), source
            assert 0.0 <= source.score <= 1.0 and source.snippet
        answer = "".join(e.text for e in events if isinstance(e, TextPiece))
        assert answer.strip(), question
        end = events[-1]
        assert isinstance(end, EndSignal) and end.finish_reason in ("stop", "length")
        assert end.generated_tokens > 0 and end.tokens_per_s > 0 and end.ttft_ms > 0


def test_follow_up_question_and_no_rag(real_server):
    client = OvmsClient(real_server.grpc_url)
    first = [{"role": "user", "content": EXAMPLES[0]}]
    answer = "".join(e.text for e in client.ask(first, SHORT) if isinstance(e, TextPiece))
    follow_up = [
        *first,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "Say it shorter."},
    ]
    no_rag = GenerationSettings(max_new_tokens=24, temperature=0.0, use_rag=False)
    events = list(client.ask(follow_up, no_rag))
    assert events[0] == Sources(())
    assert isinstance(events[-1], EndSignal) and events[-1].generated_tokens > 0


def test_cli_against_the_real_servable(real_server, run_cli):
    result = run_cli(EXAMPLES[0], "--max-new-tokens", "32", url=real_server.grpc_url, timeout=120)
    assert result.returncode == 0, result.stderr
    answer, sources = result.stdout.split("Sources:\n")
    assert answer.strip() and "[1] " in sources and "score" in sources


@pytest.mark.browser
def test_page_against_the_real_servable(real_server, start_page, browser_page, artifacts):
    page = browser_page
    page.goto(start_page(real_server.grpc_url))
    expect(page.locator("#status-line")).to_contain_text("Ready", timeout=30_000)
    page.get_by_text(EXAMPLES[0], exact=True).first.click()
    expect(page.locator("#question textarea")).to_have_value(EXAMPLES[0])
    page.press("#question textarea", "Enter")
    answer = page.locator("#chat [data-testid='bot']:not(.thought *)").first
    expect(answer).to_contain_text("tokens/s", timeout=120_000)
    sources = page.locator("#chat .thought").first
    expect(sources).to_contain_text("Sources (")
    sources.locator(".title").click()
    expect(sources).to_contain_text("harvest-tern-ht7.md")
    expect(sources.locator(".content")).to_be_visible()
    page.wait_for_timeout(500)  # the unfolding animation, for the screenshot
    page.screenshot(path=str(artifacts / "client-page-real-servable.png"))


def test_the_openai_gateway_in_front_of_the_real_servable_stops_at_a_stop_string(real_server, start_gateway):
    client = openai.OpenAI(base_url=start_gateway(real_server.grpc_url).url, api_key="unused", max_retries=0)

    def answer(**settings) -> tuple[str, str]:
        completion = client.chat.completions.create(
            model="python_model", messages=[{"role": "user", "content": "Describe the water cycle."}],
            max_tokens=40, temperature=0, extra_body={"use_rag": False}, **settings,
        )  # fmt: skip
        return completion.choices[0].message.content, completion.choices[0].finish_reason

    # The first answer to a prompt computes all of it; later ones reuse its prefix cache, which in bf16
    # (CPUs with AMX) rounds differently, and a greedy answer may part there. Both compared reuse it.
    answer()
    full, _ = answer()
    # A word well into the greedy answer, cut where it first occurs; the same greedy answer stops there.
    word = next(w for w in full.split()[3:] if len(w) >= 4 and full.find(w) > 0)
    stopped, reason = answer(stop=[word])
    assert reason == "stop"
    assert word not in stopped
    assert stopped.strip() == full[: full.find(word)].strip()
