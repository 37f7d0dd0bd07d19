"""Incremental detokenization: the text of growing token sequences, released piece by piece.

`pipeline.step()` holds Python's GIL, so any Python work per token, in whatever thread, adds to the
time between steps. Decoding is therefore done for every running request at once, in one batched
`Tokenizer.decode` call per step (`decode_pieces`), instead of two calls per request and token.
"""

from __future__ import annotations

from collections.abc import Sequence

import openvino_genai as ov_genai

INCOMPLETE = "\ufffd"


class IncrementalDecoder:
    """The token ids of one request and how much of their text has been released.

    Each step decodes the ids since the last released piece together with the ids of that piece,
    so tokenizers that drop or merge a word-initial space on their own still read right; the new
    text is released unless it ends in an incomplete UTF-8 character (a byte-level token that is
    the first part of one), which waits for the next token. Unlike a streamer that delays every
    piece by a few tokens, the first piece goes out with the first token.
    """

    def __init__(self) -> None:
        self._ids: list[int] = []
        self._prefix = 0  # start of the ids decoded as context for the next piece
        self._read = 0  # end of the ids already released as text

    def add(self, ids: Sequence[int]) -> None:
        self._ids.extend(ids)

    @property
    def pending(self) -> bool:
        """True when ids arrived that are not yet released as text."""
        return len(self._ids) > self._read

    def windows(self) -> tuple[list[int], list[int]]:
        """The ids to decode: those of the released context, and the context with the new ids."""
        return self._ids[self._prefix : self._read], self._ids[self._prefix :]

    def release(self, context: str, text: str, final: bool) -> str:
        """The new text given the decoded `windows()`; at the end (`final`) nothing is held back."""
        if len(text) <= len(context) or (text.endswith(INCOMPLETE) and not final):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(context) :]


def decode_pieces(
    tokenizer: ov_genai.Tokenizer, decoders: Sequence[tuple[IncrementalDecoder, bool]]
) -> list[str]:
    """The new text of each (decoder, final) pair, from one batched decode of all their windows."""
    windows = [window for decoder, _ in decoders for window in decoder.windows()]
    if not windows:
        return []
    texts = tokenizer.decode(windows)
    return [
        decoder.release(texts[2 * i], texts[2 * i + 1], final) for i, (decoder, final) in enumerate(decoders)
    ]
