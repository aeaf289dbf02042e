"""The experiment lifecycle's transition table, as the checker holds every record to it.

Each transition of ``sinergym_cloud/lifecycle.py`` leaves an event in the record's ``history`` (its
``note``); this table says, per event, from which states to which states it may move a record
(the diagram at the top of lifecycle.py). A record is replayed from its creation (launch writes it
``queued`` or ``pending``, with no event) through its history; every event must be legal from a
state the record could be in, and the replay must end where the record is. tests/test_soak.py
checks the table against lifecycle's functions themselves, so it cannot drift from them.
"""

from __future__ import annotations

from typing import Any

from sinergym_cloud.records import HISTORY_LIMIT, TERMINAL

LIVE = ("pending", "starting", "running")
BOOTED = ("starting", "running")
NOT_TERMINAL = ("queued", *LIVE)

# event -> {from state: the states it may lead to}
TABLE: dict[str, dict[str, tuple[str, ...]]] = {
    "started": {"queued": ("pending",)},  # promote: a queued experiment gets a VM slot
    "requeued": {"pending": ("queued",)},  # requeue: over quota, back to the queue
    "moved": {"pending": ("pending",)},  # move: zone failover before any boot
    "dispatch": {s: ("starting",) for s in LIVE},  # claim_boot (a booted one only on a recreated VM)
    "trainer": {"starting": ("running",)},  # trainer_started
    "completion:succeeded": {s: ("succeeded",) for s in BOOTED},
    "completion:pruned": {s: ("pruned",) for s in BOOTED},
    "completion:failed": {s: ("pending", "failed") for s in BOOTED},  # retried within max_failures
    "completion:preempted": {s: ("pending", "failed") for s in BOOTED},  # within max_preemptions
    "sweeper:retried": {s: ("pending",) for s in LIVE},  # lost: retried on a fresh VM
    "sweeper:failed": {s: ("failed",) for s in LIVE},  # lost over its budget
    "pruned": {s: ("pruned",) for s in BOOTED},  # the sweep's pruner
    "cancelled": {s: ("cancelled",) for s in NOT_TERMINAL},  # force_terminal, never_started
    "failed": {s: ("failed",) for s in NOT_TERMINAL},  # force_terminal (rollback, give-up, a bad trial)
}
# Events that note something without changing the state (any state).
NOTES = frozenset({"zone", "trial", "host-key-mismatch", "instance-gone"})
CREATED = frozenset({"queued", "pending"})  # what launch writes


def replay(record: dict[str, Any]) -> str:
    """Why ``record``'s history is not a legal path from its creation to its state ("" if it is)."""
    history = record.get("history") or []
    if len(history) >= HISTORY_LIMIT:
        return ""  # its oldest events were dropped: the path cannot be rebuilt
    possible = set(CREATED)
    for position, event in enumerate(history):
        name = str(event.get("event", ""))
        if name in NOTES:
            continue
        moves = TABLE.get(name)
        if moves is None:
            return f"event {name!r} (history[{position}]) is not in the lifecycle's table"
        reached = {to for state in possible for to in moves.get(state, ())}
        if not reached:
            return (
                f"event {name!r} (history[{position}]: {str(event.get('detail', ''))[:80]!r}) is not legal from "
                f"{' or '.join(sorted(possible))}"
            )
        possible = reached
    state = str(record.get("state"))
    if state not in possible:
        return f"its history leads to {' or '.join(sorted(possible))}, but it is {state}"
    return ""


def terminal(state: str) -> bool:
    return state in TERMINAL
