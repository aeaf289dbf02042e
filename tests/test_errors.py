"""The error tree and its one classifier: what each error means for a delivery."""

from __future__ import annotations

import time

import pytest
from google.api_core import exceptions as google

from sinergym_cloud import errors
from sinergym_cloud.errors import BadMessage, BatchNotFound, Conflict, Permanent
from sinergym_cloud.gcp import retry
from sinergym_cloud.inputs import batchfile, legacy


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (BadMessage("schema_version 9"), "permanent"),
        (Permanent("no such template"), "permanent"),
        (legacy.LegacyCommandError("unknown flag --x"), "permanent"),
        (batchfile.BatchFileError("study.yaml: experiments: not a list"), "permanent"),
        (google.ServiceUnavailable("busy"), "transient"),
        (google.TooManyRequests("slow down"), "transient"),
        (google.InternalServerError("oops"), "transient"),
        (google.DeadlineExceeded("late"), "transient"),
        (ConnectionError("reset"), "transient"),
        (TimeoutError("read"), "transient"),
        (Conflict("lost 20 races"), "transient"),
        (google.Forbidden("quota", errors=[{"reason": "rateLimitExceeded"}]), "transient"),
        (google.Forbidden("no permission", errors=[{"reason": "forbidden"}]), "unknown"),
        (google.BadRequest("bad name"), "rejected"),
        (google.NotFound("no template"), "rejected"),
        (KeyError("a bug"), "unknown"),
        (RecursionError("deep"), "unknown"),
    ],
)
def test_classify(exc: BaseException, kind: str) -> None:
    assert errors.classify(exc) == kind


def test_rate_limits_are_read_from_reasons_not_text() -> None:
    # The words in the message decide nothing; Google's reason does.
    assert not errors.is_transient(google.Forbidden("rateLimitExceeded (but only in the text)"))
    assert retry.is_transient(google.Forbidden("x", errors=[{"reason": "userRateLimitExceeded"}]))


def test_the_tree_keeps_the_builtin_bases() -> None:
    # Code written as `except ValueError` around parsing, or `except LookupError`, still catches them.
    assert issubclass(BadMessage, ValueError)
    assert issubclass(legacy.LegacyCommandError, ValueError)
    assert issubclass(BatchNotFound, LookupError)
    assert not issubclass(BatchNotFound, KeyError), "a KeyError in rendering code must not read as 'not found'"
    for cls in (BadMessage, BatchNotFound, Conflict, legacy.LegacyCommandError, batchfile.BatchFileError):
        assert issubclass(cls, errors.SinergymError)


def test_batch_not_found_names_the_batch() -> None:
    assert str(BatchNotFound("b-1", "gs://state")) == "no batch 'b-1' in gs://state"


def test_status_exits_not_found_only_for_a_missing_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    from sinergym_cloud.publisher import arguments, commands, target, views

    monkeypatch.setattr(target, "runtime", lambda project=None: object())

    def missing(rt: object, batch_id: str, **kw: object) -> views.BatchView:
        raise BatchNotFound(batch_id)

    monkeypatch.setattr(views, "batch_status", missing)
    assert commands.status_command(["b-1"]) == arguments.EXIT_NOT_FOUND

    def broken(rt: object, batch_id: str, **kw: object) -> views.BatchView:
        return {}["counts"]  # a KeyError while assembling the view: a bug, which must not be reported as "no batch"

    monkeypatch.setattr(views, "batch_status", broken)
    with pytest.raises(KeyError):
        commands.status_command(["b-1"])


def test_a_rate_quota_refusal_is_retried_only_for_the_rate_limited_wait() -> None:
    calls: list[float] = []

    def refused() -> None:
        calls.append(time.monotonic())
        raise google.Forbidden("quota", errors=[{"reason": "rateLimitExceeded"}])

    with pytest.raises(google.Forbidden):
        retry.call(refused, what="get instance", deadline=30.0, initial=0.05, maximum=0.1, rate_limited=0.5)
    assert len(calls) > 1 and calls[-1] - calls[0] < 2.0, "given up after about rate_limited, not the deadline"
    busy: list[float] = []

    def unavailable() -> None:
        busy.append(time.monotonic())
        raise google.ServiceUnavailable("busy")

    with pytest.raises(google.ServiceUnavailable):
        retry.call(unavailable, what="get instance", deadline=1.5, initial=0.05, maximum=0.1, rate_limited=0.2)
    assert busy[-1] - busy[0] > 1.0, "other transient errors keep the whole deadline"
