"""The GenAI benchmark's token clock times a decode as the servable's client does: a step that gives
only the end of sequence (no text, so the servable sends no piece) is counted but is no arrival."""

from __future__ import annotations

from bench.genai import TokenClock
from bench.timing import RequestTiming

EOS = 2


def test_a_step_of_only_silent_tokens_is_counted_but_not_an_arrival() -> None:
    timing = RequestTiming(start=0.0)
    clock = TokenClock(timing, frozenset({EOS}))
    clock.write(7)
    clock.write([8, 9, 10])
    clock.write([EOS])
    assert timing.tokens == 5
    assert len(timing.arrivals) == 2


def test_a_step_with_text_and_the_end_of_sequence_is_an_arrival() -> None:
    timing = RequestTiming(start=0.0)
    clock = TokenClock(timing, frozenset({EOS}))
    clock.write([8, 9])
    clock.write([10, EOS])
    assert timing.tokens == 4
    assert len(timing.arrivals) == 2
