"""A sweep's MLflow parent run: one per batch, each trial's run its child (``mlflow.parentRunId``).

Launch makes it once: the run id is kept in a create-only object, so a redelivered launch finds it
(a run made by a launch that lost the race to write it is deleted). It is best effort: a tracking
server that cannot be reached costs the nesting, never the sweep.
"""

from __future__ import annotations

import logging
from typing import Any

from sinergym_cloud import names
from sinergym_cloud.contracts import Batch
from sinergym_cloud.gcp.runtime import Runtime

log = logging.getLogger(__name__)


def parent_run_id(rt: Runtime, batch_id: str) -> str | None:
    found = rt.state.read(names.sweep_run_object(batch_id))
    return str(found.data["run_id"]) if found is not None else None


def ensure_parent_run(rt: Runtime, batch: Batch, experiment: str) -> str | None:
    """The sweep's parent run id (made now if there is none yet); None without a tracking server."""
    known = parent_run_id(rt, batch.batch_id)
    if known or batch.sweep is None or not rt.settings.mlflow_uri:
        return known
    s = batch.sweep
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=rt.settings.mlflow_uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else _create(client, experiment)
        tags = {"batch_id": batch.batch_id, "sweep": "parent", "sweep.method": s.method}
        run = client.create_run(experiment_id, run_name=f"sweep-{batch.batch_id}", tags=tags)
        params: dict[str, Any] = {"method": s.method, "trials": s.n_trials, "replicates": s.n_replicates,
                                  "seed": s.seed, "pruner": s.pruner.name if s.pruner else "none",
                                  "objectives": ",".join(f"{o.direction}:{o.metric}" for o in s.goals) or "none",
                                  "parameters": ",".join(sorted(s.parameters))[:500]}  # fmt: skip
        for key, value in params.items():
            client.log_param(run.info.run_id, key, str(value))
    except Exception as exc:  # noqa: BLE001 - MLflow is advice here: the sweep runs without a parent run
        log.warning("batch %s: no MLflow parent run for the sweep (%s: %s)", batch.batch_id, type(exc).__name__, exc)
        return None
    if not rt.state.create(names.sweep_run_object(batch.batch_id), {"run_id": run.info.run_id}):
        try:
            client.delete_run(run.info.run_id)  # another launch of the same batch made one first
        except Exception as exc:  # noqa: BLE001 - a stray empty run is harmless
            log.info("could not delete a duplicate parent run: %s", exc)
    return parent_run_id(rt, batch.batch_id)


def _create(client: Any, name: str) -> str:
    try:
        return str(client.create_experiment(name))
    except Exception:  # a trainer created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)
