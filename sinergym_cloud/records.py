"""The documents the control plane keeps per batch and per experiment in the state bucket."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sinergym_cloud import budget, names, text
from sinergym_cloud.contracts import Experiment

ExperimentState = Literal["queued", "pending", "starting", "running", "succeeded", "failed", "cancelled", "pruned"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "pruned"})
# Live: holds one of the batch's VM slots (a VM asked for, booting, or training). Queued is neither.
LIVE: frozenset[str] = frozenset({"pending", "starting", "running"})
HISTORY_LIMIT = 50
MAX_BOOTS_KEPT = 50  # VM creation times kept per experiment (each retry or preemption adds one)


class Event(BaseModel):
    at: float = Field(default_factory=time.time)
    event: str
    detail: str = ""


class Record(BaseModel):
    # Records outlive code versions: unknown fields from a newer version are kept, not rejected.
    model_config = ConfigDict(extra="allow")

    def doc(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ExperimentRecord(Record):
    batch_id: str
    index: int
    name: str
    group: str
    zone: str
    mig: str
    instance: str
    spec: Experiment
    state: ExperimentState = "pending"
    boot_id: str | None = None
    attempts: int = 0
    preemptions: int = 0
    failures: int = 0
    created_at: float = Field(default_factory=time.time)
    dispatched_at: float | None = None
    running_at: float | None = None
    finished_at: float | None = None
    trainer_finished_at: float | None = None  # when the trainer sent its completion (its own clock)
    delete_requested_at: float | None = None
    alerted_at: float | None = None
    # Each boot's VM creation time, from Compute Engine's creationTimestamp, read when that VM's life
    # ends (its completion, or the sweeper losing it): the report's VM-hours are counted from these.
    vm_created: dict[str, float] = Field(default_factory=dict)
    # The queue (lifecycle.promote / hand_over): who gave this experiment its VM slot ("launch", or the
    # index of the experiment that ended and handed its slot on), when, and to whom this one handed its own.
    started_by: int | str | None = None
    started_at: float | None = None
    handed_to: int | None = None
    quota_seen_at: float | None = None  # when the sweeper first saw its VM refused for quota (this request)
    # What dispatch verified when it claimed the current boot: the VM's id and creation time from
    # Compute (a running experiment is re-claimed only by a recreated VM), and the nonce its
    # completion key is derived from with the key's hash (signing.py); never the key itself.
    vm_id: str | None = None
    vm_created_at: float | None = None
    completion_nonce: str | None = None
    completion_key_sha256: str | None = None
    # The current boot's Cloud Storage token (gcp/tokens.py): when dispatch handed it over and when it
    # expires; the sweeper asks dispatch for a fresh one at half its life.
    token_issued_at: float | None = None
    token_expires_at: float | None = None
    reason: str = ""
    # The last lines its trainer logged, from its completion (or, for one the sweeper gave up on, from
    # its log in the bucket): shown beside a failure's reason in status and the alerts.
    log_tail: list[str] = Field(default_factory=list)
    mlflow_run_id: str | None = None
    output_uris: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    timesteps: int = 0
    # A sweep's trial (sweep_spec.py): its number, its parameters (set before its VM is asked for:
    # planned at launch, or proposed when it left the queue), the objective's value after each episode
    # the trainer reported (for the pruner), and the sampler's and pruner's bookkeeping (sweep.py).
    trial: int | None = None
    params: dict[str, Any] | None = None
    intermediate: dict[str, float] = Field(default_factory=dict)
    sampler_attrs: dict[str, Any] = Field(default_factory=dict)
    pruner_attrs: dict[str, Any] = Field(default_factory=dict)
    report_progress: bool = False  # its sweep has a pruner: the trainer reports every episode
    history: list[Event] = Field(default_factory=list)
    # The zones this experiment left because they could not create its VM (zone failover), in order.
    moved_from: list[str] = Field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def vm_booted(self, boot_id: str, created_at: float | None) -> None:
        """Keep the creation time of the VM that served ``boot_id`` (the first MAX_BOOTS_KEPT boots).

        A VM created after that boot was dispatched is already its replacement (the group recreated
        a preempted VM before its end was handled): its time is not this boot's, and is dropped."""
        if created_at is None or len(self.vm_created) >= MAX_BOOTS_KEPT:
            return
        if self.dispatched_at is not None and created_at > self.dispatched_at:
            return
        self.vm_created[boot_id] = created_at

    def note(self, event: str, detail: str = "") -> None:
        self.history.append(Event(event=event, detail=detail[:500]))
        del self.history[:-HISTORY_LIMIT]

    def object_metadata(self) -> dict[str, str]:
        return object_metadata(self.doc())


METADATA_TEXT = 300  # characters of a reason or log line kept in an object's custom metadata


def object_metadata(doc: dict[str, Any], now: float | None = None) -> dict[str, str]:
    """What an experiment's state object carries in its custom metadata: one listing then tells every
    experiment's state without reading N objects (``state.update(..., metadata=object_metadata)``),
    and what a batch's summary needs: its VM-hours as of this write (a live VM's grow from the
    object's update time), and an ended one's reason and last log line (the alerts, ``list``)."""
    meta = {"state": str(doc["state"]), "instance": str(doc["instance"]), "name": str(doc.get("name", ""))[:200]}
    hours = budget.vm_hours(doc, time.time() if now is None else now)[0]
    if hours is not None:
        meta["vm_hours"] = f"{hours:.5f}"
    if doc["state"] in TERMINAL and doc.get("reason"):
        meta["reason"] = text.clean(doc["reason"], METADATA_TEXT)
    tail = [line for line in doc.get("log_tail") or [] if str(line).strip()]
    if tail:
        meta["last_line"] = text.clean(tail[-1], METADATA_TEXT)
    return meta


class LaunchRecord(Record):
    batch_id: str
    status: Literal["launching", "launched", "failed", "cancelled"] = "launching"
    # Who sent it (the Batch's ``submitted_by``: the publisher's user, or what a service says it is)
    # and when; a rerun's earlier batch and experiments (``retry_of``, Batch schema 4).
    submitted_by: str = ""
    submitted_at: float | None = None
    retry_of: dict[str, Any] | None = None
    group: str
    zone: str
    template: str
    results_bucket: str
    migs: list[str]
    experiments: int
    mlflow_experiment: str
    message_id: str = ""
    created_at: float = Field(default_factory=time.time)
    launched_at: float | None = None
    attempts: int = 0
    error: str = ""
    # How many experiments run at once, why (max_parallel, a quota, the batch's size), and since when
    # it is lower than at launch (a quota error at run time).
    parallelism: int | None = None
    parallelism_reason: str = ""
    parallelism_lowered: str = ""
    parallelism_lowered_at: float | None = None
    parallelism_launched: int | None = None  # the value before the first lowering
    # The zones the batch may use, in order (the first is ``zone``); empty in records older than zones.
    zones: list[str] = Field(default_factory=list)
    # The zone queued experiments start in: ``zone`` until an experiment fails over
    # (batches.move_to_next_zone moves it on, never back), so the queue does not ask a zone known to
    # be out of stock first.
    current_zone: str = ""
    # The batch's VM-hour budget (budget.py), and when and why it stopped starting experiments.
    max_vm_hours: float | None = None
    budget_reached: str = ""
    budget_reached_at: float | None = None

    @property
    def all_zones(self) -> list[str]:
        return list(self.zones) or [self.zone]

    @property
    def start_zone(self) -> str:
        return self.current_zone or self.zone

    def _in_zone(self, mig: str, zone: str) -> str:
        """The batch's group ``mig`` as named in ``zone``: itself in the batch's first zone, that name
        plus the zone's letter in a zone it fails over to."""
        return mig if zone == self.zone else names.zone_mig_name(mig, zone)

    def group_in(self, zone: str, index: int) -> str:
        """The group that holds experiment ``index`` in ``zone``."""
        return self._in_zone(names.mig_name(self.group, self.batch_id, names.mig_part(index)), zone)

    def groups(self) -> list[tuple[str, str]]:
        """(zone, group) of every group the batch has or may have made: its groups in ``zone``, and
        the groups it fails over to in each other zone. Cleanup, cancel, the sweeper and status all
        go through this one list."""
        return [(zone, self._in_zone(mig, zone)) for zone in self.all_zones for mig in self.migs]


class FinalizeRecord(Record):
    owner: str
    claimed_at: float = Field(default_factory=time.time)
    lease_until: float
    mig_deleted: bool = False
    alerted: bool = False
    counts: dict[str, int] = Field(default_factory=dict)
    finished_at: float | None = None
    # The batch.finished event was published (None: a teardown from before events, never announced).
    announced: bool | None = False
    vm_hours: float | None = None


@dataclass(frozen=True)
class Failed:
    """A failed experiment as a batch's summary names it."""

    index: int
    name: str
    reason: str
    last_line: str


@dataclass(frozen=True)
class BatchSummary:
    """A batch from one listing of its experiment objects (their custom metadata, object_metadata):
    counts by state, VM-hours so far, and each failed experiment with its reason and last log line."""

    counts: dict[str, int]
    vm_hours: float
    failures: list[Failed] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def summarise(listing: dict[int, tuple[dict[str, str], float | None]], now: float) -> BatchSummary:
    """``listing``: index -> (the object's custom metadata, its update time). A live experiment's
    VM-hours grow from its object's last write until ``now``."""
    counts: dict[str, int] = {}
    hours = 0.0
    failures = []
    for index in sorted(listing):
        meta, updated = listing[index]
        state = meta.get("state", "")
        counts[state] = counts.get(state, 0) + 1
        with contextlib.suppress(ValueError):
            hours += float(meta.get("vm_hours") or 0.0)
        if state in LIVE and "vm_hours" in meta and updated is not None:
            hours += max(0.0, now - updated) / 3600
        if state == "failed":
            failures.append(Failed(index, meta.get("name", ""), meta.get("reason", ""), meta.get("last_line", "")))
    return BatchSummary(counts=counts, vm_hours=hours, failures=failures)
