"""Where an experiment may write: the path fields and the rule that keeps them in its own prefix."""

from __future__ import annotations

import re

PATH_FIELDS = ("tensorboard",)  # the Experiment fields that name a place to write
_GS_URI = re.compile(r"^gs://(?P<bucket>[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9])/(?P<path>.*)$")
PATH_RULE = "a relative path inside the run directory, or gs://<results bucket>/<batch id>/<experiment name>/..."


def path_problem(value: str | None) -> str:
    """Why a path field's value is not acceptable in itself ("" if it is)."""
    if value is None:
        return ""
    if ".." in value.removeprefix("gs://").split("/"):
        return f"must not contain '..' (it must be {PATH_RULE})"
    if value.startswith("gs://"):
        m = _GS_URI.match(value)
        if m is None or len([p for p in m["path"].split("/") if p]) < 2:
            return f"{value[:80]!r} is not {PATH_RULE}"
        return ""
    if not value or value.startswith("/"):
        return f"{value[:80]!r} is not {PATH_RULE}"
    return ""


def path_outside(value: str | None, bucket: str | None, batch_id: str, experiment_name: str | None) -> str:
    """Why a gs:// path field points outside the experiment's own prefix ("" if it does not).

    IAM lets every trainer write under every batch prefix of the results bucket, so the control
    plane keeps each experiment's writes to ``gs://<results bucket>/<batch>/<experiment>/``."""
    if not value or not value.startswith("gs://"):
        return ""
    m = _GS_URI.match(value)
    if m is None:
        return f"{value[:80]!r} is not {PATH_RULE}"
    parts = [p for p in m["path"].split("/") if p]
    if bucket is not None and m["bucket"] != bucket:
        return f"must be in the results bucket {bucket}, not {m['bucket'][:63]}"
    if not parts or parts[0] != batch_id:
        return f"must be under the batch's own prefix gs://{m['bucket']}/{batch_id}/"
    if experiment_name is not None and (len(parts) < 2 or parts[1] != experiment_name):
        return f"must be under the experiment's own prefix gs://{m['bucket']}/{batch_id}/{experiment_name}/"
    return ""
