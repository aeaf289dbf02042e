"""`make demo`: the whole system on one machine, on a real batch.

Starts the local cloud, submits two real Sinergym experiments (PPO on the continuous and DQN on the
discrete 5-zone building, different seeds, one simulated week per episode), follows them live, then
shows the outcome: each experiment's state and MLflow run, the files in the bucket, the alert that
was raised, the instance group gone, and an HTML report. Stops the local cloud at the end, unless
KEEP=1 (then browse MLflow; `make local-down` stops it).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

from rich.console import Console

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from localcloud.cloud import LocalCloud  # noqa: E402 - run as a script: sys.path is set first
from sinergym_cloud import names  # noqa: E402 - run as a script: sys.path is set first
from sinergym_cloud.config import Settings  # noqa: E402 - run as a script: sys.path is set first
from sinergym_cloud.contracts import Batch, Experiment  # noqa: E402 - run as a script: sys.path is set first
from sinergym_cloud.gcp.runtime import Runtime  # noqa: E402 - run as a script: sys.path is set first
from sinergym_cloud.publisher import render, report, views  # noqa: E402 - run as a script: sys.path is set first

console = Console()
WEEK = (1, 1, 1991, 7, 1, 1991)


def experiments() -> list[Experiment]:
    common = {
        "episodes": 2,
        "runperiod": WEEK,
        "logger": True,
        "evaluation": True,
        "eval_freq": 1,
        "eval_length": 1,
        "tensorboard": "./tensorboard_log",
        "remote_store": True,
    }
    return [
        Experiment.model_validate(
            {**common, "environment": "Eplus-5zone-hot-continuous-v1", "algorithm": "PPO", "seed": 52,
             "normalization": True, "hyperparameters": {"n_steps": 256}}
        ),
        Experiment.model_validate(
            {**common, "environment": "Eplus-5zone-hot-discrete-v1", "algorithm": "DQN", "seed": 58,
             "hyperparameters": {"learning_starts": 200, "buffer_size": 10000}}
        ),
    ]  # fmt: skip


def main() -> int:
    started = time.monotonic()
    keep = os.environ.get("KEEP") == "1"
    cloud = LocalCloud()
    was_up = cloud.is_up()
    console.rule("[bold]1. The local cloud")
    env = cloud.up(say=lambda s: console.print(f"  {s}"))
    try:
        return run(env, cloud, started)
    finally:
        if keep or was_up:
            console.print(
                f"\nThe local cloud keeps running ({'KEEP=1' if keep else 'it was already up'}): "
                f"MLflow at {env['MLFLOW_TRACKING_URI']}; `make local-down` stops it."
            )
        else:
            console.rule("[bold]6. Stopping the local cloud")
            stopped = cloud.down()
            console.print(f"  stopped {len(stopped)} services; no process left (KEEP=1 keeps it up to browse MLflow)")
        console.print(f"demo took {time.monotonic() - started:.0f}s")


def run(env: dict[str, str], cloud: LocalCloud, started: float) -> int:
    rt = Runtime.from_settings(Settings.from_env(env))
    batch = Batch(
        batch_id=f"demo-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}",
        experiments=experiments(),
        submitted_at=dt.datetime.now(dt.UTC),
    )
    console.rule("[bold]2. Submitting a batch of two real Sinergym experiments")
    for i, e in enumerate(batch.experiments):
        console.print(f"  #{i} {e.algorithm} on {e.environment}, seed {e.seed}, {e.episodes} one-week episodes")
    from sinergym_cloud import contracts

    rt.clients.publish(names.TOPIC_BATCHES, contracts.dump(batch), batch_id=batch.batch_id)
    console.print(f"  published batch [bold]{batch.batch_id}[/] on {names.TOPIC_BATCHES}")
    console.rule("[bold]3. Live progress (launch -> VMs boot -> dispatch over SSH -> training -> cleanup)")
    code = render.wait(rt, batch.batch_id, timeout=900)
    console.rule("[bold]4. Outcome")
    info = views.batch_status(rt, batch.batch_id)
    bucket = rt.clients.storage.bucket(rt.settings.results_bucket)
    for row in info.experiments:
        console.print(f"[bold]#{row.index} {row.algorithm} seed {row.seed}: {row.state}[/]")
        console.print(f"    MLflow run: {row.mlflow_url}")
        prefix = names.results_prefix(batch.batch_id, row.name)
        files = [b.name for b in bucket.list_blobs(prefix=prefix)]
        shown = [f for f in files if f.endswith(("model.zip", "progress.csv", "MANIFEST.json"))][:4]
        console.print(f"    {len(files)} files under gs://{bucket.name}/{prefix}, e.g.:")
        for f in shown:
            console.print(f"      gs://{bucket.name}/{f}")
    alerts = [
        json.loads(line)["incident"]
        for line in (cloud.dir / "monitoring" / "alerts.jsonl").read_text().splitlines()
        if batch.batch_id in line
    ]
    for a in alerts:
        console.print(f"[bold]alert raised[/] [{a['severity']}] {a['documentation']['subject']}")
        console.print(f"    {a['documentation']['content']}")
    mig = names.mig_name(batch.group_name, batch.batch_id)
    gone = rt.compute.members(batch.zone, mig) is None
    console.print(f"instance group {mig}: {'deleted' if gone else '[red]still exists[/]'}")
    console.rule("[bold]5. Report")
    page = report.write(rt, batch.batch_id, REPO / "reports" / batch.batch_id)
    console.print(f"  report: {page}")
    console.print(f"  (open it in a browser; PNGs beside it)   batch done in {time.monotonic() - started:.0f}s")
    ok = code == 0 and gone and bool(alerts)
    if not ok:
        console.print("[red]the demo did not end as expected: see the status above and .local/logs/[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
