"""Where an experiment may write: the path fields, the rule that keeps them in place, and where a
``gs://`` TensorBoard folder puts each experiment's run.

A ``gs://`` ``tensorboard`` value names a *folder* of the results bucket: the batch's one
TensorBoard folder (``gs://RESULTS/BATCH/tb``), or a folder of the bucket outside any batch
(``gs://RESULTS/tensorboard``). Each experiment writes into ``FOLDER/<experiment name>/``, so one
``tensorboard --logdir FOLDER`` shows every run and no two experiments share a file; a value
already inside the experiment's own prefix (``gs://RESULTS/BATCH/EXPERIMENT/...``) is used as it is.
What a VM writes is that subfolder only: the rule below refuses a folder inside another
experiment's own prefix.
"""

from __future__ import annotations

import re

PATH_FIELDS = ("tensorboard",)  # the Experiment fields that name a place to write
_GS_URI = re.compile(r"^gs://(?P<bucket>[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9])/(?P<path>.*)$")
# An experiment's name ends with the batch's submission time and its index (contracts.experiment_name).
_EXPERIMENT_NAME = re.compile(r"-[0-9]{8}T[0-9]{6}Z-[0-9]+$")
PATH_RULE = (
    "a relative path inside the run directory, or a gs:// folder of the results bucket "
    "(gs://<results bucket>/<batch id>/<folder>: each experiment writes into <folder>/<experiment name>/)"
)


def _parts(value: str) -> tuple[str, list[str]] | None:
    m = _GS_URI.match(value)
    if m is None:
        return None
    return m["bucket"], [p for p in m["path"].split("/") if p]


def path_problem(value: str | None) -> str:
    """Why a path field's value is not acceptable in itself ("" if it is)."""
    if value is None:
        return ""
    if ".." in value.removeprefix("gs://").split("/"):
        return f"must not contain '..' (it must be {PATH_RULE})"
    if value.startswith("gs://"):
        parsed = _parts(value)
        if parsed is None or not parsed[1]:
            return f"{value[:80]!r} is not {PATH_RULE}"
        return ""
    if not value or value.startswith("/"):
        return f"{value[:80]!r} is not {PATH_RULE}"
    return ""


def _inside_own_prefix(parts: list[str], batch_id: str, experiment_name: str) -> bool:
    return len(parts) >= 2 and parts[0] == batch_id and parts[1] == experiment_name


def path_outside(
    value: str | None,
    bucket: str | None,
    batch_id: str,
    experiment_name: str | None,
    others: frozenset[str] = frozenset(),
) -> str:
    """Why a gs:// path field would have its experiment write outside what is its own ("" if not).

    IAM lets every trainer write under every batch prefix of the results bucket, so the control
    plane keeps each experiment's writes to its own places: the folder must be in the results bucket
    (``bucket``; None when not known yet), and not inside another experiment's own prefix
    (``<batch>/<experiment>/``: one of ``others``, this batch's other experiments, or any folder
    named as experiments are). The experiment then writes only into ``run_folder``."""
    if not value or not value.startswith("gs://"):
        return ""
    parsed = _parts(value)
    if parsed is None or not parsed[1]:
        return f"{value[:80]!r} is not {PATH_RULE}"
    got, parts = parsed
    if bucket is not None and got != bucket:
        return f"must be in the results bucket {bucket}, not {got[:63]}"
    if experiment_name is not None and _inside_own_prefix(parts, batch_id, experiment_name):
        return ""
    if len(parts) >= 2 and (
        (parts[0] == batch_id and parts[1] in others) or _EXPERIMENT_NAME.search(parts[1]) is not None
    ):
        return (
            f"gs://{got}/{parts[0]}/{parts[1][:80]}/ is another experiment's own prefix: give a folder of the "
            f"batch (gs://{got}/{batch_id}/tensorboard) or of the bucket"
        )
    return ""


def run_folder(value: str, batch_id: str, experiment_name: str) -> str:
    """The gs:// folder (ending in '/') an experiment writes its TensorBoard files into, for a gs://
    ``tensorboard`` value: ``FOLDER/<experiment name>/``, or the value itself when it is already in
    the experiment's own prefix."""
    parsed = _parts(value)
    if parsed is None:
        raise ValueError(f"{value[:80]!r} is not a gs:// folder")
    bucket, parts = parsed
    if _inside_own_prefix(parts, batch_id, experiment_name):
        return f"gs://{bucket}/{'/'.join(parts)}/"
    return f"gs://{bucket}/{'/'.join([*parts, experiment_name])}/"
