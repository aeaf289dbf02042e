"""Pub/Sub's subscription filter language (localcloud/pubsub_filter.py): what it admits and what it refuses."""

from __future__ import annotations

import pytest

from localcloud.pubsub_filter import FilterError, matches, parse

ATTRS = {"event": "batch.finished", "batch_id": "b-1", "state": "finished", "iana.org/tag": "en", "ce-type": "x.y"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("attributes:event", True),
        ("attributes:missing", False),
        ('attributes:"iana.org/tag"', True),
        ('attributes.event = "batch.finished"', True),
        ('attributes.event="batch.finished"', True),
        ('attributes.event = "batch.rejected"', False),
        ('attributes.event != "batch.rejected"', True),
        ('attributes.missing != "x"', True),
        ('attributes.missing = ""', False),
        ('attributes."iana.org/tag" = "en"', True),
        ('attributes.ce-type = "x.y"', True),
        ('hasPrefix(attributes.event, "batch.")', True),
        ('hasPrefix(attributes.event, "experiment.")', False),
        ('hasPrefix(attributes.missing, "")', False),
        ("NOT attributes:missing", True),
        ("-attributes:event", False),
        ('attributes:event AND attributes.state = "finished"', True),
        ('attributes:event AND attributes.state = "failed"', False),
        ('attributes.state = "failed" OR attributes.state = "finished"', True),
        ('(attributes:event AND attributes.state = "x") OR attributes:batch_id', True),
        ('attributes:event AND (attributes.state = "x" OR NOT attributes:batch_id)', False),
        ('NOT (attributes.event = "batch.finished" OR attributes:nothing)', False),
        ('attributes.batch_id = "b-\\x31"', True),  # \x31 is "1"
        ('attributes.batch_id = "b-\\061"', True),  # octal 061 is "1"
    ],
)
def test_filters_match_as_pubsub_documents(text: str, expected: bool) -> None:
    assert matches(text, ATTRS) is expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("attributes.event = unquoted", "expected string"),
        ('labels.event = "x"', "expected attributes"),
        ('hasPrefix(attributes.event "x")', "expected comma"),
        ("(attributes:event", "expected rparen"),
        ("attributes:a AND attributes:b OR attributes:c", "AND and OR are combined without parentheses"),
        ('hasSuffix(attributes.event, "x")', "expected attributes"),
        ("attributes.event", "expected = or != or :"),
        ("attributes:event attributes:x", "unexpected 'attributes'"),
        ('attributes.x = "\\q"', "unknown escape"),
        ("attributes:event && attributes:x", "unexpected '&'"),
        ('attributes.event = "' + "x" * 250 + '"', "the limit is 256"),
    ],
)
def test_filters_pubsub_refuses_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(FilterError, match=why):
        parse(text)


def test_a_filter_is_parsed_not_evaluated() -> None:
    """Nothing in a filter is run: a Python expression is just an unexpected token."""
    with pytest.raises(FilterError):
        parse('__import__("os").system("true")')
