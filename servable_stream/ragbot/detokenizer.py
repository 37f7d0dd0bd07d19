"""Incremental detokenization: the text of a growing token sequence, released piece by piece."""

from __future__ import annotations

from collections.abc import Sequence

import openvino_genai as ov_genai

INCOMPLETE = "\ufffd"


class IncrementalDecoder:
    """Turns token ids into text as they arrive, holding back only what is not yet complete text.

    Each step decodes the ids since the last released piece together with the ids of that piece,
    so tokenizers that drop or merge a word-initial space on their own still read right; the new
    text is released unless it ends in an incomplete UTF-8 character (a byte-level token that is
    the first part of one), which waits for the next token. Unlike a streamer that delays every
    piece by a few tokens, the first piece goes out with the first token.
    """

    def __init__(self, tokenizer: ov_genai.Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the ids decoded as context for the next piece
        self._read = 0  # end of the ids already released as text

    def _decode(self, start: int, end: int) -> str:
        return self._tokenizer.decode(self._ids[start:end]) if end > start else ""

    def write(self, ids: Sequence[int]) -> str:
        """Add ids; the new complete text (may be empty)."""
        self._ids.extend(ids)
        released = self._decode(self._prefix, self._read)
        text = self._decode(self._prefix, len(self._ids))
        if len(text) <= len(released) or text.endswith(INCOMPLETE):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(released) :]

    def flush(self) -> str:
        """Whatever is still held back, at the end of the sequence."""
        released = self._decode(self._prefix, self._read)
        text = self._decode(self._prefix, len(self._ids))
        self._prefix = self._read = len(self._ids)
        return text[len(released) :]
