"""``python publisher.py report BATCH_ID``: one self-contained HTML page (and PNGs beside it).

From the state bucket and MLflow: one row per experiment (environment, algorithm, seed, state,
episodes, final and best mean reward, comfort violation, energy, wall time, VM-hours), learning
curves of the mean episode reward per algorithm with the spread across seeds, the cost of the
batch (VM-hours, and the share of them a VM was alive but not training), and links to each MLflow
run and output prefix. Images are embedded, so the page works offline and can be mailed around.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import json
import logging
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sinergym_cloud import names, text
from sinergym_cloud.budget import vm_hours  # the count the budget is held to (re-exported here)
from sinergym_cloud.errors import BatchNotFound
from sinergym_cloud.publisher import views
from sinergym_cloud.publisher.arguments import EXIT_NOT_FOUND, EXIT_OK, add_batch_arguments
from sinergym_cloud.publisher.figures import png
from sinergym_cloud.publisher.views import BatchView

if TYPE_CHECKING:
    from sinergym_cloud.gcp.runtime import Runtime

log = logging.getLogger(__name__)

REWARD = "train/mean_reward"
EVAL = "eval/mean_reward"


@dataclass
class Row:
    index: int
    name: str
    environment: str
    algorithm: str
    seed: int | None
    state: str
    episodes: int
    final_reward: float | None = None
    best_reward: float | None = None
    best_eval: float | None = None
    comfort_violation: float | None = None
    energy_kwh: float | None = None
    wall_hours: float | None = None
    vm_hours: float | None = None
    idle_hours: float | None = None
    mlflow_url: str | None = None
    outputs: str | None = None
    reason: str = ""
    curve: list[tuple[int, float]] = field(default_factory=list)


def gather(rt: Runtime, batch_id: str) -> tuple[BatchView, list[Row]]:
    """The batch's status and one report row per experiment, with its curve and metrics from MLflow."""
    info = views.batch_status(rt, batch_id, with_links=True)
    tracking = rt.settings.mlflow_uri
    client = None
    if tracking:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=tracking)
    now = dt.datetime.now(dt.UTC).timestamp()
    rows = []
    for e in info.experiments:
        doc = rt.state.read(names.experiment_object(batch_id, e.index))
        extra = dict(doc.data) if doc else {}  # as stored: records older than the queue lack its fields
        alive, idle = vm_hours({**asdict(e), **extra}, now)
        row = Row(
            index=e.index,
            name=e.name,
            environment=e.environment,
            algorithm=e.algorithm,
            seed=e.seed,
            state=str(extra.get("state", e.state)),  # as read with its VM-hours
            episodes=e.episodes,
            wall_hours=((e.finished_at or now) - e.running_at) / 3600 if e.running_at else None,
            vm_hours=alive,
            idle_hours=idle,
            mlflow_url=e.mlflow_url,
            outputs=e.outputs[0] if e.outputs else None,
            reason=e.reason,
        )
        if client is not None and e.mlflow_run_id:
            try:
                history = client.get_metric_history(e.mlflow_run_id, REWARD)
                row.curve = sorted((m.step, m.value) for m in history)
                run = client.get_run(e.mlflow_run_id)
                metrics = run.data.metrics
                row.comfort_violation = metrics.get("train/comfort_violation_time_pct")
                row.energy_kwh = metrics.get("train/energy_kwh")
                evals = [m.value for m in client.get_metric_history(e.mlflow_run_id, EVAL)]
                rewards = [v for _, v in row.curve]
                row.final_reward = rewards[-1] if rewards else None
                row.best_reward = max(rewards) if rewards else None
                row.best_eval = max(evals) if evals else None
            except Exception as exc:  # noqa: BLE001 - a report without one run's curve is still a report
                log.warning("MLflow run %s: %s", e.mlflow_run_id, exc)
        rows.append(row)
    return info, rows


def curves_by_algorithm(rows: list[Row]) -> dict[str, list[tuple[int, float, float, float]]]:
    """Per algorithm (and environment): (episode, mean, min, max) of the mean reward across seeds."""
    grouped: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for step, value in row.curve:
            grouped[f"{row.algorithm} on {row.environment}"][step].append(value)
    return {
        key: [(step, statistics.fmean(v), min(v), max(v)) for step, v in sorted(by_step.items())]
        for key, by_step in sorted(grouped.items())
    }


def plot_learning_curves(rows: list[Row]) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = curves_by_algorithm(rows)
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, points in curves.items():
        steps = [p[0] for p in points]
        ax.plot(steps, [p[1] for p in points], marker="o", label=label)
        ax.fill_between(steps, [p[2] for p in points], [p[3] for p in points], alpha=0.2)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training episode")
    ax.set_ylabel("mean reward per step")
    ax.set_title("Learning curves (line: mean across seeds; band: min-max)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    data = png(fig)
    plt.close(fig)
    return data


def plot_energy_comfort(rows: list[Row]) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [
        (r, float(r.energy_kwh), float(r.comfort_violation))
        for r in rows
        if r.energy_kwh is not None and r.comfort_violation is not None
    ]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for algorithm in sorted({r.algorithm for r, _, _ in points}):
        mine = [(r, x, y) for r, x, y in points if r.algorithm == algorithm]
        ax.scatter([x for _, x, _ in mine], [y for _, _, y in mine], label=algorithm, s=60)
        for r, x, y in mine:
            ax.annotate(f"#{r.index}", (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("energy in the last training episode (kWh)")
    ax.set_ylabel("comfort violation (% of time)")
    ax.set_title("Energy vs comfort, last episode of each experiment")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    data = png(fig)
    plt.close(fig)
    return data


def _fmt(value: float | None, digits: int = 2) -> str:
    return "&ndash;" if value is None else f"{value:.{digits}f}"


def experiment_link(info: BatchView) -> str:
    name = f"<code>{html.escape(info.mlflow_experiment)}</code>"
    url = info.mlflow_experiment_url
    return f'<a href="{html.escape(url)}">{name}</a>' if url else name


def outputs_link(uri: str | None, storage_endpoint: str | None) -> str:
    if not uri:
        return "&ndash;"
    bucket, _, prefix = uri.removeprefix("gs://").partition("/")
    if storage_endpoint:
        href = f"{storage_endpoint.rstrip('/')}/storage/v1/b/{bucket}/o?prefix={prefix}"
    else:
        href = f"https://console.cloud.google.com/storage/browser/{bucket}/{prefix}"
    return f'<a href="{html.escape(href)}">{html.escape(uri)}</a>'


def render(info: BatchView, rows: list[Row], images: dict[str, bytes], storage_endpoint: str | None) -> str:
    total_vm = sum(r.vm_hours or 0 for r in rows)
    total_idle = sum(r.idle_hours or 0 for r in rows)
    idle_share = (total_idle / total_vm * 100) if total_vm else 0.0
    counts = ", ".join(f"{v} {k}" for k, v in sorted(info.counts.items()))
    body = []
    for r in rows:
        run = f'<a href="{html.escape(r.mlflow_url)}">run</a>' if r.mlflow_url else "&ndash;"
        body.append(
            "<tr>"
            f"<td>{r.index}</td><td>{html.escape(r.environment)}</td><td>{r.algorithm}</td><td>{r.seed}</td>"
            f'<td class="state {r.state}">{r.state}</td><td>{r.episodes}</td>'
            f"<td>{_fmt(r.final_reward, 3)}</td><td>{_fmt(r.best_reward, 3)}</td><td>{_fmt(r.best_eval, 1)}</td>"
            f"<td>{_fmt(r.comfort_violation, 1)}</td><td>{_fmt(r.energy_kwh, 1)}</td>"
            f"<td>{_fmt(r.wall_hours * 60 if r.wall_hours is not None else None, 1)}</td>"
            f"<td>{_fmt(r.vm_hours, 3)}</td><td>{run}</td><td>{outputs_link(r.outputs, storage_endpoint)}</td>"
            f"<td>{html.escape(text.clean(r.reason, 1000))}</td>"
            "</tr>"
        )
    figures = []
    for name, caption in (
        ("learning_curves.png", "Mean episode reward per algorithm, spread across seeds"),
        ("energy_comfort.png", "Energy and comfort of each experiment's last training episode"),
    ):
        if name in images:
            encoded = base64.b64encode(images[name]).decode()
            figures.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}">'
                f"<figcaption>{html.escape(caption)} ({name})</figcaption></figure>"
            )
    alerts = "".join(
        f"<li>{html.escape(a.metric)}: {html.escape(text.clean(json.dumps(a.labels, sort_keys=True), 2000))} at {html.escape(a.time)}</li>"
        for a in info.alerts
    )
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Batch {html.escape(info.batch_id)} report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.5rem; text-align: right; }}
td:nth-child(2), td:last-child, th {{ text-align: left; }}
.state.succeeded {{ color: #176117; }} .state.failed {{ color: #a11; }} .state.cancelled {{ color: #777; }}
.state.queued {{ color: #8a6d00; }}
figure {{ display: inline-block; margin: 1rem 1rem 0 0; }} img {{ max-width: 100%; }}
.cost {{ font-size: 1.05rem; }}
</style></head>
<body>
<h1>Batch <code>{html.escape(info.batch_id)}</code></h1>
<p>{html.escape(info.status)} — {html.escape(counts)} — group {html.escape(info.group)}, zone {html.escape(info.zone)}.
MLflow experiment {experiment_link(info)}; outputs {outputs_link(info.results, storage_endpoint)}.</p>
<p class="cost" id="cost">Cost: <strong>{total_vm:.3f} VM-hours</strong> for {len(rows)} experiment(s);
each VM counted from its creation (Compute Engine's timestamp) to its deletion request;
idle share {idle_share:.0f}% (VM alive but not training: boot, dispatch, upload, deletion).</p>
<table id="experiments">
<thead><tr><th>#</th><th>environment</th><th>algorithm</th><th>seed</th><th>state</th><th>episodes</th>
<th>final mean reward</th><th>best mean reward</th><th>best evaluation (episode reward)</th><th>comfort violation %</th><th>energy kWh</th>
<th>wall min</th><th>VM-hours</th><th>MLflow</th><th>outputs</th><th>note</th></tr></thead>
<tbody>
{"".join(body)}
</tbody></table>
{"".join(figures)}
{sweep_section(info, images)}
<h2>Alerts raised</h2><ul>{alerts or "<li>none</li>"}</ul>
<p><small>Generated {generated} by <code>python publisher.py report {html.escape(info.batch_id)}</code>.</small></p>
</body></html>
"""


def sweep_figure(info: BatchView) -> bytes | None:
    if not info.sweep:
        return None
    from sinergym_cloud.publisher import sweep_view

    return sweep_view.plot(info.sweep)


def sweep_section(info: BatchView, images: dict[str, bytes]) -> str:
    """A sweep's trials, best trial and figure (sweep_view.py); nothing for a batch without one."""
    if not info.sweep:
        return ""
    from sinergym_cloud.publisher import sweep_view

    return sweep_view.html_section(info.sweep, images.get("sweep.png"))


def write(rt: Runtime, batch_id: str, out_dir: Path) -> Path:
    info, rows = gather(rt, batch_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = {}
    for name, plot in (("learning_curves.png", plot_learning_curves), ("energy_comfort.png", plot_energy_comfort)):
        data = plot(rows)
        if data:
            (out_dir / name).write_bytes(data)
            images[name] = data
    sweep_png = sweep_figure(info)
    if sweep_png:
        (out_dir / "sweep.png").write_bytes(sweep_png)
        images["sweep.png"] = sweep_png
    page = out_dir / "report.html"
    page.write_text(render(info, rows, images, rt.settings.storage_endpoint))
    summary = {
        "batch_id": batch_id,
        "status": info.status,
        "vm_hours": sum(r.vm_hours or 0 for r in rows),
        "idle_hours": sum(r.idle_hours or 0 for r in rows),
        "experiments": [r.__dict__ for r in rows],
    }
    (out_dir / "report.json").write_text(json.dumps(summary, indent=2, default=str))
    return page


def main(argv: list[str], runtime: Callable[[str | None], Runtime]) -> int:
    parser = argparse.ArgumentParser(
        prog="python publisher.py report",
        description="Write an HTML report of a batch (learning curves, energy and comfort, cost) and PNGs beside it.",
    )
    parser.add_argument("--out", type=Path, default=None, help="directory (default reports/<batch id>/)")
    add_batch_arguments(parser)
    args = parser.parse_args(argv)
    rt = runtime(args.project_id)
    try:
        page = write(rt, args.batch_id, args.out or Path("reports") / args.batch_id)
    except BatchNotFound as exc:
        print(f"publisher: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(f"report written: {page.resolve()}")
    return EXIT_OK
