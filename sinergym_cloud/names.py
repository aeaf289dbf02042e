"""Every name the system agrees on: topics, subscriptions, objects, groups and instances.

One module, so that the publisher, the functions, the trainer, the local cloud and the Terraform
checks all read the same strings. Names are derived, never looked up: an instance's name alone tells
which batch and which experiment it serves.
"""

from __future__ import annotations

import base64
import hashlib
import re

# Pub/Sub topics (the Terraform in infra/ declares the same names; a test checks it).
TOPIC_BATCHES = "experiment-batches"
TOPIC_READY = "instance-ready"
TOPIC_COMPLETIONS = "experiment-completions"
TOPIC_SWEEP = "sweeper-ticks"
TOPICS = (TOPIC_BATCHES, TOPIC_READY, TOPIC_COMPLETIONS, TOPIC_SWEEP)
# What the control plane tells other services (contracts.BatchEvent): every experiment's state
# change, a batch's end, a batch refused. Consumed by nobody here; no function subscribes to it.
TOPIC_EVENTS = "batch-events"
# The attributes of every message on TOPIC_EVENTS, for subscription filters
# (``attributes.event = "batch.finished"``); experiment_index only on experiment events.
EVENT_ATTRIBUTES = ("event", "batch_id", "experiment_index", "state")
# A message carrying this attribute is a probe (``trainer check`` proving it may publish): every
# function acknowledges it and does nothing else.
PROBE_ATTRIBUTE = "sinergym_probe"
# The ``kind`` attribute of the sweeper's TokenRefresh on the instance-ready topic (dispatch).
TOKEN_REFRESH_KIND = "token-refresh"  # noqa: S105 - a message kind, not a secret


# Instance metadata. Launch preserves the first two on each VM (per-instance configs); the template
# sets the others (infra/terraform/modules/trainer-vm); the VM's startup script (infra/vm/startup.sh)
# and the local VMs read them. A test checks that the script and Terraform spell them the same.
META_BATCH_ID = "sinergym-batch-id"
META_EXPERIMENT_INDEX = "sinergym-experiment-index"
META_READY_TOPIC = "sinergym-ready-topic"
META_TRAINER_IMAGE = "sinergym-trainer-image"
META_MLFLOW_URI = "sinergym-mlflow-uri"
META_WANDB_SECRET = "sinergym-wandb-secret"  # noqa: S105 - the name of a metadata key, not a secret
TEMPLATE_METADATA = (META_READY_TOPIC, META_TRAINER_IMAGE, META_MLFLOW_URI, META_WANDB_SECRET)


def instance_metadata(batch_id: str, index: int) -> dict[str, str]:
    """What each experiment's VM carries in its preserved state: which batch and experiment it serves."""
    return {META_BATCH_ID: batch_id, META_EXPERIMENT_INDEX: str(index)}


def dead_letter_topic(topic: str) -> str:
    """The dead-letter topic paired with ``topic``."""
    return f"{topic}-dead-letter"


# Which function consumes which topic.
FUNCTION_TOPICS = {
    "launch": TOPIC_BATCHES,
    "dispatch": TOPIC_READY,
    "cleanup": TOPIC_COMPLETIONS,
    "sweeper": TOPIC_SWEEP,
}


def push_subscription(function: str) -> str:
    """The subscription that delivers a function's topic to it."""
    return f"{function}-push"


# Metric types written to Cloud Monitoring (alert policies in infra/ filter on them).
METRIC_PREFIX = "custom.googleapis.com/sinergym"
METRIC_BATCH_FINISHED = f"{METRIC_PREFIX}/batch_finished"
METRIC_EXPERIMENT_FAILED = f"{METRIC_PREFIX}/experiment_failed"
METRIC_INSTANCE_OVERDUE = f"{METRIC_PREFIX}/instance_overdue"
# Written once per batch, when its failed share first passes SINERGYM_FAILURE_RATE_THRESHOLD.
METRIC_BATCH_FAILING = f"{METRIC_PREFIX}/batch_failing"

# Compute Engine names: 1-63 chars, [a-z]([-a-z0-9]{0,61}[a-z0-9])?
GCE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# The group name is a prefix: leave room for "-<short id>p<part>-<index>".
GROUP_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
BATCH_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

# Compute Engine caps a managed instance group at 1000 instances: bigger batches are split.
MIG_MAX_INSTANCES = 1000


def batch_short_id(batch_id: str) -> str:
    """An 8-character, name-safe digest of a batch id.

    Batch ids are free-form (up to 63 characters), but instance names are capped at 63, so the
    group and instance names carry this digest instead. It is deterministic: the same batch id
    always names the same group, which is what makes a resubmitted batch a no-op.
    """
    digest = hashlib.sha256(batch_id.encode()).digest()
    return base64.b32encode(digest).decode().lower()[:8]


def mig_part(index: int) -> int:
    """Which of a batch's groups holds experiment ``index``."""
    return index // MIG_MAX_INSTANCES


def mig_name(group: str, batch_id: str, part: int = 0) -> str:
    """The managed instance group for part ``part`` of a batch."""
    base = f"{group}-{batch_short_id(batch_id)}"
    return base if part == 0 else f"{base}p{part}"


def zone_mig_name(mig: str, zone: str) -> str:
    """The group a batch's group ``mig`` fails over to in ``zone`` (another zone of its region): the
    group's name plus the zone's letter, which names the zone within the region."""
    return f"{mig}-{zone.rsplit('-', 1)[-1]}"


def instance_name(group: str, batch_id: str, index: int) -> str:
    """The one VM name experiment ``index`` of a batch runs on."""
    return f"{mig_name(group, batch_id, mig_part(index))}-{index}"


def base_group(mig: str) -> str:
    """The group a batch's group is named after: itself, or, for the group the batch fails over to in
    another zone (``zone_mig_name``: the name, a dash and the zone's letter), the name without the
    letter. Unambiguous: a batch's own group ends in its 8-character digest (or the part's ``p<n>``)."""
    head, _, letter = mig.rpartition("-")
    return head if head and len(letter) == 1 and letter.isalpha() else mig


def experiment_index(mig: str, instance: str) -> int | None:
    """The experiment index an instance of ``mig`` serves, or None if it is not one of ours.

    Exact: the instance name must be the group name, a dash and a decimal index. No substring or
    position matching. An experiment keeps its instance name when it moves to another zone, so an
    instance of a failover group is named after the batch's group (``base_group``).
    """
    for group in dict.fromkeys((mig, base_group(mig))):
        prefix = f"{group}-"
        if not instance.startswith(prefix):
            continue
        tail = instance[len(prefix) :]
        if not tail.isdigit() or (len(tail) > 1 and tail.startswith("0")):
            return None
        return int(tail)
    return None


# Cloud Storage object names of the control plane's state (in the state bucket).
def batch_prefix(batch_id: str) -> str:
    return f"batches/{batch_id}/"


def batch_object(batch_id: str) -> str:
    """Create-only: the accepted batch. Its existence is the claim that the batch was accepted."""
    return f"batches/{batch_id}/batch.json"


def launch_object(batch_id: str) -> str:
    """Compare-and-swap: what launch has created so far for the batch."""
    return f"batches/{batch_id}/launch.json"


def experiment_object(batch_id: str, index: int) -> str:
    """Compare-and-swap: one experiment's state. One object each, so writers never contend."""
    return f"batches/{batch_id}/experiments/{index:05d}.json"


def experiments_prefix(batch_id: str) -> str:
    return f"batches/{batch_id}/experiments/"


def trial_object(batch_id: str, trial: int) -> str:
    """Create-only: a sweep trial's proposed parameters. The first proposal written is the trial's,
    so duplicate and concurrent deliveries that start it agree on one (control/sweeps.py)."""
    return f"batches/{batch_id}/trials/{trial:05d}.json"


def sweep_run_object(batch_id: str) -> str:
    """Create-only: a sweep's MLflow parent run id (control/sweep_runs.py)."""
    return f"batches/{batch_id}/sweep-run.json"


def finalize_object(batch_id: str) -> str:
    """Create-only claim, then compare-and-swap: the batch's one-time teardown (MIG delete, alert)."""
    return f"batches/{batch_id}/finalize.json"


def failing_object(batch_id: str) -> str:
    """Create-only: the batch's failure-rate page was decided (written once, so the metric that pages
    gets one point, however many experiments fail in the same second)."""
    return f"batches/{batch_id}/failing.json"


# One object per batch, written at launch and at its end, its summary in its custom metadata:
# ``list`` is one listing of this prefix, never a read per batch.
INDEX_PREFIX = "index/"


def index_object(batch_id: str) -> str:
    return f"{INDEX_PREFIX}{batch_id}"


def active_object(batch_id: str) -> str:
    """Exists while a batch may have live VMs: the sweeper's index of what to look at."""
    return f"active/{batch_id}"


ACTIVE_PREFIX = "active/"

# Every zone a batch was launched in (``zones/<zone>``): where the sweeper looks for orphan groups.
ZONES_PREFIX = "zones/"


def zone_object(zone: str) -> str:
    return f"{ZONES_PREFIX}{zone}"


# A group's description names its batch and the deployment (its state bucket) that owns it, so a
# group that outlived its records can be traced back, and one deployment's sweeper never touches
# the groups of another sharing the project and zone.
GROUP_DESCRIPTION = "sinergym batch {batch_id} state gs://{state_bucket}"
_GROUP_DESCRIPTION = re.compile(r"^sinergym batch (?P<batch_id>\S+) state gs://(?P<state_bucket>\S+)$")


def group_description(batch_id: str, state_bucket: str) -> str:
    return GROUP_DESCRIPTION.format(batch_id=batch_id, state_bucket=state_bucket)


def batch_of_group(description: str | None, state_bucket: str) -> str | None:
    """The batch id a group's description names, or None for a group that is not this deployment's."""
    found = _GROUP_DESCRIPTION.match(description or "")
    if found is None or found["state_bucket"] != state_bucket or not BATCH_ID.match(found["batch_id"]):
        return None
    return found["batch_id"]


# Objects in the results bucket. Everything a trainer writes is under its experiment's prefix,
# so its service account can be confined to that prefix (an IAM condition, see infra/).
def results_prefix(batch_id: str, experiment_name: str) -> str:
    """Where an experiment's outputs go: ``<batch>/<experiment>/``."""
    return f"{batch_id}/{experiment_name}/"


def heartbeat_object(batch_id: str, experiment_name: str) -> str:
    """Rewritten by the trainer every few seconds; the sweeper reads its update time."""
    return f"{results_prefix(batch_id, experiment_name)}heartbeat.json"


def checkpoint_prefix(batch_id: str, experiment_name: str) -> str:
    """The experiment's latest resumable checkpoint."""
    return f"{results_prefix(batch_id, experiment_name)}checkpoint/"


def logs_prefix(batch_id: str, experiment_name: str) -> str:
    """The experiment's logs, one folder per boot (``<attempt>-<boot id>/``), kept after its VM is gone."""
    return f"{results_prefix(batch_id, experiment_name)}logs/"


def log_boot_prefix(batch_id: str, experiment_name: str, attempt: int, boot_id: str) -> str:
    """One boot's logs: numbered chunks, each written once (``000000.log`` is the VM's startup log)."""
    return f"{logs_prefix(batch_id, experiment_name)}{attempt:03d}-{boot_id}/"


# On Google Cloud the VM agent also writes each line to Cloud Logging, under this log name
# (``gcloud logging read 'logName="projects/P/logs/sinergym-trainer" AND labels.batch_id="B"'``).
LOG_NAME = "sinergym-trainer"


def log_chunk_object(batch_id: str, experiment_name: str, attempt: int, boot_id: str, seq: int) -> str:
    return f"{log_boot_prefix(batch_id, experiment_name, attempt, boot_id)}{seq:06d}.log"
