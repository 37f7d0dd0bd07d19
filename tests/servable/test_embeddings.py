"""The passage embeddings of ranking: a window embedded before is taken from the bounded cache, with
the vector of its own text. Real OpenVINO embeddings (the default MiniLM folder)."""

from __future__ import annotations

import numpy as np
from prometheus_client import REGISTRY


def embedded_passages() -> float:
    return REGISTRY.get_sample_value("rag_embedded_texts_total", {"kind": "passages"}) or 0.0


def test_a_passage_embedded_before_is_not_embedded_again(model):
    ferry = "The Nordvik ferry leaves the harbour at 06:40 every weekday."
    buns = "The Hallgrim bakery sells cardamom buns for 38 kroner."
    paint = "The Skarv lighthouse was painted teal in 1987."
    before = embedded_passages()
    first = model.embed_passages([ferry, buns])
    assert embedded_passages() == before + 2

    again = model.embed_passages([buns, paint, buns])
    assert embedded_passages() == before + 3  # only the lighthouse was new
    assert again.shape == (3, first.shape[1])
    assert np.array_equal(again[0], first[1]) and np.array_equal(again[2], first[1])
    alone = np.asarray(model.embed_documents([paint])[0], dtype=np.float32)
    assert np.allclose(again[1], alone, atol=1e-4)
    assert not np.allclose(again[1], first[0], atol=1e-2)


def test_the_cache_keeps_the_most_recently_used_windows(model, monkeypatch):
    import ragbot.embeddings

    monkeypatch.setattr(ragbot.embeddings, "PASSAGE_CACHE_WINDOWS", 2)
    oldest, middle, newest = (f"Window {n} of the cache test names the harbour." for n in (1, 2, 3))
    model.embed_passages([oldest])
    model.embed_passages([middle])
    model.embed_passages([oldest])  # used again: the middle one is now the least recently used
    before = embedded_passages()
    model.embed_passages([newest])
    model.embed_passages([oldest])
    assert embedded_passages() == before + 1
    model.embed_passages([middle])
    assert embedded_passages() == before + 2
