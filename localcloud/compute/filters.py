"""Compute Engine list filters: ``field op value`` terms joined by AND/OR (AND by default).

Supported: ``= != > < <= >= :`` on nested fields (``labels.batch = x``, ``status = RUNNING``),
``labels.k:*`` (key exists), and the regex operators ``eq``/``ne`` (full match). Terms may be
parenthesised. Mixing the two styles is rejected, as Compute Engine does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]

_TERM = re.compile(
    r"""\s*\(?\s*(?P<field>[A-Za-z_][A-Za-z0-9_.]*)\s*
        (?P<op>!=|<=|>=|=|<|>|:|\beq\b|\bne\b)\s*
        (?P<value>"[^"]*"|'[^']*'|[^\s)]+)\s*\)?\s*""",
    re.VERBOSE,
)


class FilterError(ValueError):
    pass


def _lookup(resource: dict[str, Any], field: str) -> Any:
    value: Any = resource
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _compare(actual: Any, op: str, expected: str) -> bool:
    if op in ("eq", "ne"):
        matched = actual is not None and re.fullmatch(expected, str(actual)) is not None
        return matched if op == "eq" else not matched
    if op == ":":
        if expected == "*":
            return actual is not None
        return actual is not None and expected in str(actual)
    if actual is None:
        return op == "!="
    text = str(actual)
    if op in ("=", "!="):
        pattern = "^" + re.escape(expected).replace(r"\*", ".*") + "$"
        equal = re.match(pattern, text) is not None
        return equal if op == "=" else not equal
    try:
        a: Any = float(text)
        b: Any = float(expected)
    except ValueError:
        a, b = text, expected
    return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]


def parse(expression: str | None) -> Predicate:
    """A predicate over resource dicts for a Compute Engine filter expression."""
    if not expression or not expression.strip():
        return lambda resource: True
    terms: list[tuple[str, str, str]] = []
    joins: list[str] = []
    rest = expression.strip()
    while rest:
        m = _TERM.match(rest)
        if not m:
            raise FilterError(f"Invalid filter expression: {expression!r}")
        value = m["value"]
        if value[:1] in "\"'":
            value = value[1:-1]
        terms.append((m["field"], m["op"], value))
        rest = rest[m.end() :]
        join = re.match(r"(AND|OR)\s+", rest)
        if join:
            joins.append(join.group(1))
            rest = rest[join.end() :]
        elif rest:
            joins.append("AND")
    regex_style = {op in ("eq", "ne") for _, op, _ in terms}
    if len(regex_style) > 1:
        raise FilterError("Invalid filter expression: eq/ne cannot be mixed with comparison operators")

    def predicate(resource: dict[str, Any]) -> bool:
        result = _compare(_lookup(resource, terms[0][0]), terms[0][1], terms[0][2])
        for join, (field, op, value) in zip(joins, terms[1:], strict=True):
            term = _compare(_lookup(resource, field), op, value)
            result = (result and term) if join == "AND" else (result or term)
        return result

    return predicate
