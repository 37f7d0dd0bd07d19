"""Requests of the reliability tests, sent with the servable tests' stream client (tests/servable/rag.py)."""

from __future__ import annotations

import json
from typing import Any

from tests.servable import rag


def json_request(question: str, **settings: Any) -> str:
    """A JSON chat request with one user message and the given generation settings."""
    return json.dumps({"messages": [{"role": "user", "content": question}], **settings})


def ask(url: str, text: str | bytes, timeout: float = 60.0) -> rag.Answer:
    """One question on a fresh stream, waiting at most `timeout` seconds for its end."""
    return rag.ask(url, text, timeout)
