"""Pub/Sub's subscription filter language, parsed (never evaluated as code) and applied to attributes.

Google's Pub/Sub emulator stores a subscription's ``filter`` and ignores it; the local cloud's
Pub/Sub front (``pubsub_front.py``) applies it with this module, as Pub/Sub does. The language, as
Pub/Sub documents it (https://cloud.google.com/pubsub/docs/subscription-message-filter):

- ``attributes:KEY``                    the message has attribute KEY;
- ``attributes.KEY = "value"``          it has KEY with exactly that value (``!=``: it has not);
- ``hasPrefix(attributes.KEY, "p")``    it has KEY and the value starts with ``p``;
- ``NOT x`` (or ``-x``), ``x AND y``, ``x OR y``, parentheses. ``AND`` and ``OR`` are not mixed at
  one level without parentheses (``a AND b OR c`` is refused: write ``(a AND b) OR c``).

A KEY other than letters, digits, ``-`` and ``_`` is a string literal (``attributes."k.x"``);
string literals take the usual backslash escapes. Keys and values are case-sensitive. A filter is
at most 256 bytes. ``parse`` raises ``FilterError`` with the position of what it could not read:
Pub/Sub answers ``INVALID_ARGUMENT`` to a subscription created with such a filter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

MAX_FILTER_BYTES = 256

Attributes = Mapping[str, str]
Predicate = Callable[[Attributes], bool]


class FilterError(ValueError):
    """A filter Pub/Sub would refuse, with where and why."""


@dataclass(frozen=True)
class Token:
    kind: str  # IDENT STRING LPAREN RPAREN COMMA DOT COLON EQ NE MINUS END
    text: str
    at: int


_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<ne>!=)
      | (?P<eq>=)
      | (?P<lparen>\()
      | (?P<rparen>\))
      | (?P<comma>,)
      | (?P<dot>\.)
      | (?P<colon>:)
      | (?P<minus>-)
      | (?P<ident>[A-Za-z0-9_][A-Za-z0-9_-]*)
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def _unquote(literal: str, at: int) -> str:
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]  # the tokenizer guarantees a character after a backslash
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[nxt]
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise FilterError(f"bad \\{nxt} escape in the string at {at + 1}")
            out.append(chr(int(digits, 16)))
            i += 2 + width
        elif nxt in "01234567":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or not all(c in "01234567" for c in digits):
                raise FilterError(f"bad octal escape in the string at {at + 1}")
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise FilterError(f"unknown escape \\{nxt} in the string at {at + 1}")
    return "".join(out)


def tokens(text: str) -> list[Token]:
    found: list[Token] = []
    at = 0
    while at < len(text):
        m = _TOKEN.match(text, at)
        if m is None:
            raise FilterError(f"unexpected {text[at]!r} at {at + 1}")
        kind = m.lastgroup or ""
        if kind != "space":
            found.append(Token(kind.upper(), m.group(), at))
        at = m.end()
    found.append(Token("END", "", len(text)))
    return found


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokens(text)
        self.i = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.i]

    def take(self, kind: str, text: str | None = None) -> Token:
        tok = self.current
        if tok.kind != kind or (text is not None and tok.text != text):
            wanted = text or kind.lower()
            got = tok.text or "the end"
            raise FilterError(f"expected {wanted} at {tok.at + 1}, found {got!r}")
        self.i += 1
        return tok

    def keyword(self, word: str) -> bool:
        return self.current.kind == "IDENT" and self.current.text == word

    def expression(self) -> Predicate:
        first = self.conjunction()
        operands, ops = [first[0]], {first[1]} if first[1] else set()
        while self.keyword("OR"):
            self.i += 1
            operand, op = self.conjunction()
            operands.append(operand)
            ops |= {"OR"} | ({op} if op else set())
        if len(ops) > 1:
            raise FilterError("AND and OR are combined without parentheses: group them, e.g. (a AND b) OR c")
        if len(operands) == 1:
            return operands[0]
        return lambda a: any(p(a) for p in operands)

    def conjunction(self) -> tuple[Predicate, str]:
        operands = [self.unary()]
        while self.keyword("AND"):
            self.i += 1
            operands.append(self.unary())
        if len(operands) == 1:
            return operands[0], ""
        return (lambda a: all(p(a) for p in operands)), "AND"

    def unary(self) -> Predicate:
        if self.keyword("NOT") or self.current.kind == "MINUS":
            self.i += 1
            inner = self.unary()
            return lambda a: not inner(a)
        return self.primary()

    def primary(self) -> Predicate:
        if self.current.kind == "LPAREN":
            self.i += 1
            inner = self.expression()
            self.take("RPAREN")
            return inner
        if self.keyword("hasPrefix"):
            self.i += 1
            self.take("LPAREN")
            key = self.attribute_key(".")
            self.take("COMMA")
            prefix = self.string()
            self.take("RPAREN")
            return lambda a: key in a and a[key].startswith(prefix)
        self.take("IDENT", "attributes")
        if self.current.kind == "COLON":
            self.i += 1
            key = self.key()
            return lambda a: key in a
        self.take("DOT")
        key = self.key()
        if self.current.kind not in ("EQ", "NE"):
            got = self.current.text or "the end"
            raise FilterError(f"expected = or != or : at {self.current.at + 1}, found {got!r}")
        negate = self.current.kind == "NE"
        self.i += 1
        value = self.string()
        if negate:
            return lambda a: a.get(key) != value
        return lambda a: a.get(key) == value

    def attribute_key(self, separator: str) -> str:
        self.take("IDENT", "attributes")
        self.take("DOT" if separator == "." else "COLON")
        return self.key()

    def key(self) -> str:
        tok = self.current
        if tok.kind == "IDENT":
            self.i += 1
            return tok.text
        if tok.kind == "STRING":
            self.i += 1
            return _unquote(tok.text, tok.at)
        raise FilterError(f"expected an attribute name at {tok.at + 1}, found {tok.text or 'the end'!r}")

    def string(self) -> str:
        tok = self.take("STRING")
        return _unquote(tok.text, tok.at)


def parse(text: str) -> Predicate:
    """The predicate of a subscription filter; the empty filter admits every message."""
    if len(text.encode()) > MAX_FILTER_BYTES:
        raise FilterError(f"the filter is {len(text.encode())} bytes; the limit is {MAX_FILTER_BYTES}")
    if not text.strip():
        return lambda a: True
    parser = _Parser(text)
    predicate = parser.expression()
    if parser.current.kind != "END":
        raise FilterError(f"unexpected {parser.current.text!r} at {parser.current.at + 1}")
    return predicate


def matches(text: str, attributes: Attributes) -> bool:
    """Whether a message with ``attributes`` passes the filter ``text``."""
    return parse(text)(attributes)
