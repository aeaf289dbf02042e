"""The project's own errors, in one tree, and the one place that says what an error means for a delivery.

A function that fails on a Pub/Sub message has two ways out (STYLE.md, "errors that say what to do"):

- **permanent**: the message can never be processed (malformed, refused by the contract, names a
  template that does not exist). Log it, dead-letter it with the reason, acknowledge it.
- **transient**: the service was briefly unavailable, we were rate limited, a compare-and-swap lost
  its races. Raise: Pub/Sub redelivers later, with the subscription's backoff.

``classify`` makes that decision for every caller (the delivery policy in ``events``, launch's
rollback, ``retry.call``), from exception types and Google's status codes only, never message text.

Everything here subclasses :class:`SinergymError`; each class also keeps the builtin base it always
had (``ValueError`` for bad input, ``LookupError`` for a missing batch), so ``except ValueError``
written against the older modules still catches what it caught.
"""

from __future__ import annotations

from typing import Literal

from google.api_core import exceptions as google

Kind = Literal["permanent", "rejected", "transient", "unknown"]


class SinergymError(Exception):
    """Base of every error this project raises on purpose."""


class Permanent(SinergymError):
    """Processing can never succeed: dead-letter and acknowledge, never retry (e.g. a missing template)."""


class InvalidInput(Permanent, ValueError):
    """Input that can never be accepted as it is; the message names the field or token and why."""


class BadMessage(InvalidInput):
    """A message that does not match its contract (or no message at all). ``fields``: (dotted path,
    problem) of each field at fault, when the contract's validation named them."""

    def __init__(self, message: str, fields: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.fields = list(fields or [])


class BatchNotFound(SinergymError, LookupError):
    """No batch of that id in this deployment's state bucket."""

    def __init__(self, batch_id: str, where: str = "") -> None:
        self.batch_id = batch_id
        super().__init__(f"no batch {batch_id!r}" + (f" in {where}" if where else ""))


class Conflict(SinergymError, RuntimeError):
    """A compare-and-swap on a state object lost too many races in a row (transient: try again later)."""


_TRANSIENT_GOOGLE = (
    google.ServiceUnavailable,
    google.TooManyRequests,
    google.InternalServerError,
    google.BadGateway,
    google.GatewayTimeout,
    google.DeadlineExceeded,
    google.Aborted,
)


def reasons(exc: BaseException) -> set[str]:
    """The reasons of a Google API error (``errors[].reason`` of its envelope, and an ErrorInfo's
    reason: ``rateLimitExceeded``, ``resourceNotReady``, ...): what a decision about the error may look
    at. Never its message text, which is prose for people and differs between Google Cloud and the
    local cloud (invariant 12)."""
    found = {e.get("reason") for e in getattr(exc, "errors", None) or [] if isinstance(e, dict)}
    reason = getattr(exc, "reason", None)
    if reason:
        found.add(reason)
    return {r for r in found if isinstance(r, str)}


RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"})


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: the service is busy or briefly unavailable, or we are rate limited."""
    if isinstance(exc, (*_TRANSIENT_GOOGLE, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, google.Forbidden):
        return bool(reasons(exc) & RATE_LIMIT_REASONS)
    return False


def classify(exc: BaseException) -> Kind:
    """What an error means for the message being processed.

    - ``permanent``: one of ours that says so (:class:`Permanent`).
    - ``rejected``: Google refused the request as it was made (400 or 404). Whether that is final
      depends on the call: for a creation it is (launch rolls back); elsewhere it can be a race with
      eventual consistency, so the delivery policy retries it like ``unknown``.
    - ``transient``: retry, here (``retry.call``) or by redelivery.
    - ``unknown``: a bug or an outage we do not recognise: raise, so it is redelivered and, after
      the subscription's ``max_delivery_attempts``, dead-lettered by Pub/Sub itself.
    """
    if isinstance(exc, Permanent):
        return "permanent"
    if is_transient(exc) or isinstance(exc, Conflict):
        return "transient"
    if isinstance(exc, (google.BadRequest, google.NotFound)):
        return "rejected"
    return "unknown"
