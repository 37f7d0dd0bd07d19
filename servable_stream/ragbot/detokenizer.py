"""Incremental detokenization: the text of each request's growing token ids, released piece by piece.

`pipeline.step()` holds Python's GIL, so any Python work per token, in whatever thread, adds to the
time between steps. Run right after a step, an OpenVINO detokenizer call costs about 0.35 ms even
for one token (its caches are cold), a few per cent of a step. So a model folder with a Hugging Face
`tokenizer.json` is decoded by the `tokenizers` library's `DecodeStream` (tens of microseconds);
otherwise (a GGUF file) by the OpenVINO detokenizer, once per step for every running request at once.

A piece never ends inside a character: an incomplete UTF-8 character (which decodes to U+FFFD) waits
for its next token. When the request ends, nothing is held back. If the model ended it ("stop"), the
rest goes out as the full decode has it, U+FFFD included. If it was cut short ("length", or any other
reason), trailing U+FFFD are dropped: an answer cut in the middle of a character does not end with a
replacement character on the user's screen.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import openvino_genai as ov_genai
import tokenizers
from tokenizers.decoders import DecodeStream

log = logging.getLogger(__name__)

INCOMPLETE = "\ufffd"
# Text both decoders must turn into the same ids and back before the faster one is trusted.
SELF_CHECK_TEXT = "Déjà vu: 日本語, 中文 and emoji 😀🚀 in one line.\n  Indented 42 times!"


def rest_at_end(text: str, end: str) -> str:
    """The last `text` of a request that ended with finish reason `end`: as it is if the model ended it
    ("stop"); without trailing U+FFFD (a character the cut left incomplete) if it was cut short."""
    return text if end == "stop" else text.rstrip(INCOMPLETE)


class TokenStream:
    """The generated ids of one request; `pending` while some have not yet been turned into text."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self._decoded = 0  # end of the ids already turned into text (or held back by the decoder)

    def add(self, ids: Sequence[int]) -> None:
        self.ids.extend(ids)

    @property
    def pending(self) -> bool:
        return len(self.ids) > self._decoded


class Detokenizer(Protocol):
    """Makes a `TokenStream` per request and turns the streams' new ids into text after a step."""

    def stream(self) -> TokenStream: ...

    def decode(self, streams: Sequence[tuple[TokenStream, str | None]]) -> list[str]:
        """The new text of each (stream, end) pair, `end` being None while the request runs and its
        finish reason once it is over; at the end nothing is held back (see `rest_at_end`)."""
        ...


class WindowStream(TokenStream):
    """Ids decoded by windows: the ids since the last released piece together with the ids of that
    piece, so tokenizers that drop or merge a word-initial space on their own still read right. The
    new text is released unless it ends in an incomplete UTF-8 character (a byte-level token that is
    the first part of one), which waits for the next token (it stays pending)."""

    def __init__(self) -> None:
        super().__init__()
        self._prefix = 0  # start of the ids decoded as context for the next piece

    def windows(self) -> tuple[list[int], list[int]]:
        """The ids to decode: those of the released context, and the context with the new ids."""
        return self.ids[self._prefix : self._decoded], self.ids[self._prefix :]

    def release(self, context: str, text: str, end: str | None) -> str:
        """The new text given the decoded `windows()`."""
        if end is None and (len(text) <= len(context) or text.endswith(INCOMPLETE)):
            return ""
        if end is not None:
            text = rest_at_end(text, end)
        self._prefix, self._decoded = self._decoded, len(self.ids)
        return text[len(context) :]


class OpenVINODetokenizer:
    """The pipeline's own detokenizer: one batched decode of every stream's windows per step."""

    def __init__(self, tokenizer: ov_genai.Tokenizer) -> None:
        self.tokenizer = tokenizer

    def stream(self) -> WindowStream:
        return WindowStream()

    def decode(self, streams: Sequence[tuple[WindowStream, str | None]]) -> list[str]:
        windows = [window for stream, _ in streams for window in stream.windows()]
        if not windows:
            return []
        texts = self.tokenizer.decode(windows)
        return [
            stream.release(texts[2 * i], texts[2 * i + 1], end) for i, (stream, end) in enumerate(streams)
        ]


class HubStream(TokenStream):
    """Ids decoded by a `tokenizers.decoders.DecodeStream`, which holds back incomplete characters (and
    then stays `pending`, so that the end of the request still decodes them)."""

    def __init__(self) -> None:
        super().__init__()
        self._stream = DecodeStream(skip_special_tokens=True)
        self._released = 0  # characters released so far
        self._holding = False  # the DecodeStream may hold text back

    @property
    def pending(self) -> bool:
        return self._holding or super().pending

    def take(self, tokenizer: tokenizers.Tokenizer, end: str | None) -> str:
        new, self._decoded = self.ids[self._decoded :], len(self.ids)
        text = self._stream.step(tokenizer, new) or ""
        self._holding = not text and (self._holding or bool(new))
        if end is not None:  # what the DecodeStream still holds is the rest of the full decode
            text += rest_at_end(tokenizer.decode(self.ids)[self._released + len(text) :], end)
            self._holding = False
        self._released += len(text)
        return text


class HubDetokenizer:
    """The model folder's Hugging Face `tokenizer.json`, through the `tokenizers` library."""

    def __init__(self, tokenizer: tokenizers.Tokenizer) -> None:
        self.tokenizer = tokenizer

    def stream(self) -> HubStream:
        return HubStream()

    def decode(self, streams: Sequence[tuple[HubStream, str | None]]) -> list[str]:
        return [stream.take(self.tokenizer, end) for stream, end in streams]


def detokenizer_for(model_path: Path, tokenizer: ov_genai.Tokenizer) -> Detokenizer:
    """`HubDetokenizer` when the model folder has a `tokenizer.json` that decodes as the pipeline's
    own detokenizer does (checked on a sample text); otherwise `OpenVINODetokenizer`."""
    tokenizer_json = model_path / "tokenizer.json"
    if not tokenizer_json.is_file():
        return OpenVINODetokenizer(tokenizer)
    try:
        hub = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    except Exception as exc:  # a tokenizer.json this tokenizers version cannot read
        log.warning("%s unreadable (%s); decoding with the OpenVINO detokenizer", tokenizer_json, exc)
        return OpenVINODetokenizer(tokenizer)
    ids = tokenizer.encode(SELF_CHECK_TEXT, add_special_tokens=False).input_ids.data[0].tolist()
    if tokenizer.get_eos_token_id() >= 0:
        ids.append(tokenizer.get_eos_token_id())  # special tokens are left out by both
    if hub.decode(ids) != tokenizer.decode(ids):
        log.warning("%s decodes differently from the OpenVINO detokenizer; using that one", tokenizer_json)
        return OpenVINODetokenizer(tokenizer)
    return HubDetokenizer(hub)
