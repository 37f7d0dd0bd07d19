"""A parser for protobuf text format (what MediaPipe graph ``.pbtxt`` files are written in).

No MediaPipe descriptors exist here, so the parser is schema-free: it returns a tree of ``Message``
objects whose ``Field`` entries keep their source line, which lets graph validation name the line a
problem is on. Syntax errors raise ``PbtxtError`` with line and column.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

Scalar = str | int | float | bool


class PbtxtError(Exception):
    """A syntax error, with the 1-based line and column where it was found."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.reason = message
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Identifier:
    """A bare identifier value (an enum name such as ``true`` or ``DEFAULT``)."""

    text: str


@dataclass
class Field:
    """One ``name: value`` or ``name { ... }`` entry."""

    name: str
    value: Scalar | Identifier | Message
    line: int


@dataclass
class Message:
    """A message: its fields in file order and the line it starts on."""

    line: int
    fields: list[Field] = field(default_factory=list)

    def all(self, name: str) -> list[Field]:
        """Every field called ``name`` (repeated fields), in file order."""
        return [f for f in self.fields if f.name == name]

    def first(self, name: str) -> Field | None:
        """The first field called ``name``, or None."""
        return next((f for f in self.fields if f.name == name), None)

    def walk(self) -> Iterator[Field]:
        """Every field of this message and of the messages nested in it, depth first."""
        for f in self.fields:
            yield f
            if isinstance(f.value, Message):
                yield from f.value.walk()


_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\f\v]+|\#[^\n]*)
  | (?P<newline>\n)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>-?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[fF]?)
  | (?P<ident>-?[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}<>:,;\[\]/])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    line: int
    column: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    line, line_start, pos = 1, 0, 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            what = "unterminated string" if text[pos] in "\"'" else f"unexpected character {text[pos]!r}"
            raise PbtxtError(what, line, pos - line_start + 1)
        kind = match.lastgroup or ""
        if kind == "newline":
            line, line_start = line + 1, match.end()
        elif kind != "space":
            tokens.append(_Token(kind, match.group(), line, pos - line_start + 1))
        pos = match.end()
    return tokens


def _unquote(token: _Token) -> str:
    body = token.text[1:-1]
    try:
        return codecs.escape_decode(body.encode("utf-8"))[0].decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise PbtxtError(f"bad string literal: {exc}", token.line, token.column) from None


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            last = self.tokens[-1] if self.tokens else _Token("", "", 1, 1)
            raise PbtxtError("unexpected end of file", last.line, last.column + len(last.text))
        self.pos += 1
        return token

    def expect(self, text: str) -> _Token:
        token = self.take()
        if token.text != text:
            raise PbtxtError(f"expected {text!r}, found {token.text!r}", token.line, token.column)
        return token

    def accept(self, text: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "punct" and token.text == text:
            self.pos += 1
            return True
        return False

    def message(self, line: int, closer: str | None) -> Message:
        msg = Message(line)
        while True:
            token = self.peek()
            if token is None:
                if closer is None:
                    return msg
                self.expect(closer)
            elif closer is not None and token.text == closer:
                self.pos += 1
                return msg
            msg.fields.extend(self.field())
            self.accept(",") or self.accept(";")

    def field_name(self) -> _Token:
        token = self.take()
        if token.kind == "ident" and not token.text.startswith("-"):
            return token
        if token.text == "[":
            parts = []
            while (part := self.take()).text != "]":
                parts.append(part.text)
            return _Token("ident", "[" + "".join(parts) + "]", token.line, token.column)
        raise PbtxtError(f"expected a field name, found {token.text!r}", token.line, token.column)

    def field(self) -> list[Field]:
        name = self.field_name()
        has_colon = self.accept(":")
        opener = self.peek()
        if opener is not None and opener.text in "{<" and opener.kind == "punct":
            self.pos += 1
            value = self.message(opener.line, "}" if opener.text == "{" else ">")
            return [Field(name.text, value, name.line)]
        if not has_colon:
            found = opener.text if opener else "end of file"
            raise PbtxtError(
                f"expected ':' or '{{' after {name.text!r}, found {found!r}", name.line, name.column
            )
        if self.accept("["):
            values: list[Field] = []
            while not self.accept("]"):
                values.append(Field(name.text, self.scalar(), name.line))
                self.accept(",")
            return values
        return [Field(name.text, self.scalar(), name.line)]

    def scalar(self) -> Scalar | Identifier:
        token = self.take()
        if token.kind == "string":
            text = _unquote(token)
            while (nxt := self.peek()) is not None and nxt.kind == "string":
                text += _unquote(self.take())
            return text
        if token.kind == "number":
            digits = token.text.rstrip("fF") if "x" not in token.text.lower() else token.text
            try:
                return int(digits, 0)
            except ValueError:
                return float(digits)
        if token.kind == "ident":
            lowered = token.text.lower()
            if lowered in ("true", "t"):
                return True
            if lowered in ("false", "f"):
                return False
            return Identifier(token.text)
        raise PbtxtError(f"expected a value, found {token.text!r}", token.line, token.column)


def parse(text: str) -> Message:
    """Parse protobuf text format into a ``Message`` tree (raises ``PbtxtError``)."""
    return _Parser(text).message(1, None)
