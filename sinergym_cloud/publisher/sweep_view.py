"""A sweep as people read it: its plan (``--dry-run``), its trials and best trial (``status``, the
report), and the best trial as a batch-file entry (``publisher.py best BATCH_ID``).

Kept apart from cli.py and report.py so those stay about batches in general: each calls one
function here when the batch has a sweep.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from sinergym_cloud import sweep
from sinergym_cloud.contracts import Batch
from sinergym_cloud.records import ExperimentRecord
from sinergym_cloud.sweep_spec import Sweep


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def plan_summary(batch: Batch) -> dict[str, Any]:
    """What a dry run says of a sweep (an expanded batch, sweep.expand): the trials and their
    parameters where they are known before it runs (grid, random)."""
    s = batch.sweep
    assert s is not None
    planned = sweep.plan(s)
    trials = []
    for t in range(s.n_trials):
        seeds = [s.replicate_seed(batch.experiments[0].seed, r) for r in range(s.n_replicates)]
        trials.append({"trial": t, "params": planned[t] if planned is not None else None, "seeds": seeds})
    return {
        "method": s.method,
        "trials": s.n_trials,
        "replicates": s.n_replicates,
        "experiments": s.experiments,
        "objectives": [o.model_dump() for o in s.goals],
        "pruner": s.pruner.model_dump() if s.pruner else None,
        "seed": s.seed,
        "planned": [t for t in trials],
    }


def print_plan(console: Any, summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"Sweep: {summary['method']}, {summary['trials']} trials")
    table.add_column("trial")
    table.add_column("parameters")
    table.add_column("seeds")
    for t in summary["planned"]:
        params = t["params"]
        shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items()) if params is not None else None
        table.add_row(str(t["trial"]), shown or ("decided as trials end" if params is None else "(base)"),
                      ", ".join(str(s) for s in t["seeds"]))  # fmt: skip
    console.print(table)
    goals = ", ".join(f"{o['direction']} {o['metric']}" for o in summary["objectives"]) or "no objective"
    pruner = summary["pruner"]
    pruned = f"; {pruner['name']} pruner after {pruner['min_episodes']} episode(s)" if pruner else ""
    console.print(
        f"{summary['trials']} trials x {summary['replicates']} seed(s) = {summary['experiments']} experiment(s); "
        f"{goals}{pruned}; sampler seed {summary['seed']}."
    )


def trials(s: Sweep, recs: list[ExperimentRecord]) -> dict[str, Any]:
    """The sweep's trials (params, objective, state, episodes run), the best trial or Pareto front,
    and the VM-hours pruning saved (a pruned trial's unrun episodes, at its own pace per episode)."""
    rows = []
    saved_hours = 0.0
    for rec in recs:
        episodes = len(rec.intermediate) or int(rec.metrics.get("episodes", 0))
        values = [rec.metrics.get(o.metric) for o in s.goals]
        rows.append(
            {
                "index": rec.index,
                "trial": rec.trial,
                "seed": rec.spec.seed,
                "state": rec.state,
                "params": rec.params,
                "objective": values if len(values) != 1 else values[0],
                "episodes": episodes,
                "of_episodes": rec.spec.episodes,
            }
        )
        if rec.state == "pruned" and rec.running_at and rec.finished_at and episodes:
            per_episode = (rec.finished_at - rec.running_at) / episodes
            saved_hours += per_episode * max(rec.spec.episodes - episodes, 0) / 3600
    from sinergym_cloud.control import sweeps

    front = sweep.best(s, sweeps.history(s, recs))
    return {
        "method": s.method,
        "objectives": [o.model_dump() for o in s.goals],
        "trials": rows,
        "best": [r.number for r in front],
        "pareto": len(s.goals) == 2,
        "pruned": sum(1 for r in rows if r["state"] == "pruned"),
        "vm_hours_saved_by_pruning": round(saved_hours, 4),
    }


def status_of(rt: Any, batch_id: str, recs: list[ExperimentRecord]) -> dict[str, Any] | None:
    """The sweep part of ``status`` (None for a batch without a sweep)."""
    if not any(r.trial is not None for r in recs):
        return None
    from sinergym_cloud.control import sweeps

    found = sweeps.batch_sweep(rt, batch_id)
    return trials(found[1], recs) if found is not None else None


def print_trials(console: Any, info: dict[str, Any]) -> None:
    from rich.table import Table

    best = set(info["best"])
    table = Table(title=f"Sweep ({info['method']}): {'Pareto front' if info['pareto'] else 'best'} marked *")
    for column in ("#", "trial", "seed", "state", "episodes", "objective", "parameters"):
        table.add_column(column)
    for r in info["trials"]:
        params = ", ".join(f"{k}={_short(v)}" for k, v in (r["params"] or {}).items()) or "(not yet)"
        objective = r["objective"]
        shown = (
            "-" if objective is None else _short(objective if not isinstance(objective, float) else round(objective, 4))
        )
        mark = "*" if r["index"] in best else ""
        table.add_row(f"{r['index']}{mark}", str(r["trial"]), str(r["seed"]), r["state"],
                      f"{r['episodes']}/{r['of_episodes']}", shown, params)  # fmt: skip
    console.print(table)
    console.print(f"{info['pruned']} trial(s) pruned, saving about {info['vm_hours_saved_by_pruning']:.3f} VM-hours.")


def best_entry(s: Sweep, recs: list[ExperimentRecord]) -> str:
    """The best trial (the first of a Pareto front) as a batch-file entry, to rerun with more seeds."""
    from sinergym_cloud.control import sweeps

    front = sweep.best(s, sweeps.history(s, recs))
    if not front:
        raise LookupError("no trial of the sweep has completed with its objective yet")
    rec = next(r for r in recs if r.index == front[0].number)
    entry = rec.spec.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    entry.pop("seed", None)
    entry.pop("label", None)
    entry.update(environment=rec.spec.environment, algorithm=rec.spec.algorithm, episodes=rec.spec.episodes)
    entry["seeds"] = [rec.spec.seed if rec.spec.seed is not None else 0]
    values = {o.metric: rec.metrics.get(o.metric) for o in s.goals}
    header = f"# best trial {rec.trial} (experiment {rec.index}) of {rec.batch_id}: {values}\n"
    return header + yaml.safe_dump({"experiments": [entry]}, sort_keys=False)


def best_command(rt: Any, batch_id: str) -> tuple[int, str]:
    """(exit code, text) of ``publisher.py best BATCH_ID``."""
    from sinergym_cloud.control import sweeps

    found = sweeps.batch_sweep(rt, batch_id)
    if found is None:
        return 3, f"publisher: batch {batch_id} has no sweep (or does not exist)"
    try:
        return 0, best_entry(found[1], sweeps.records(rt, batch_id))
    except LookupError as exc:
        return 1, f"publisher: batch {batch_id}: {exc}"


def plot(info: dict[str, Any] | None) -> bytes | None:
    """The sweep's figure: the Pareto front of two objectives, or each numeric parameter against the
    objective (one panel each), trials coloured by how they ended. None if nothing to plot."""
    if not info or not info["objectives"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sinergym_cloud.publisher.figures import png

    done = [r for r in info["trials"] if r["objective"] is not None and r["params"] is not None]
    best = set(info["best"])
    if info["pareto"]:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        names = [o["metric"] for o in info["objectives"]]
        points = [r for r in done if isinstance(r["objective"], list) and None not in r["objective"]]
        if not points:
            plt.close(fig)
            return None
        for r in points:
            ax.scatter(*r["objective"], color="tab:red" if r["index"] in best else "tab:blue")
        front = sorted((r["objective"] for r in points if r["index"] in best), key=lambda v: v[0])
        if front:
            ax.plot([v[0] for v in front], [v[1] for v in front], color="tab:red", label="Pareto front")
            ax.legend(fontsize=8)
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.set_title("Trials by objective (red: Pareto front)")
    else:
        numeric = sorted({k for r in done for k, v in r["params"].items() if isinstance(v, (int, float))})
        if not numeric or not done:
            return None
        fig, axes = plt.subplots(1, len(numeric), figsize=(4 * len(numeric), 3.5), squeeze=False)
        for ax, key in zip(axes[0], numeric, strict=True):
            for r in done:
                if isinstance(r["params"].get(key), (int, float)):
                    colour = "tab:red" if r["index"] in best else "tab:blue"
                    ax.scatter(r["params"][key], r["objective"], color=colour)
            ax.set_xlabel(key)
            ax.set_ylabel(info["objectives"][0]["metric"])
            if any(k in key for k in ("learning_rate",)):
                ax.set_xscale("log")
        fig.suptitle("Each parameter against the objective (red: best trial)")
    data = png(fig)
    plt.close(fig)
    return data


def html_section(info: dict[str, Any] | None, image: bytes | None = None) -> str:
    """The report's sweep section: every trial, the best (or the Pareto front), pruning's savings."""
    if not info:
        return ""
    import base64
    import html

    best = set(info["best"])
    rows = []
    for r in info["trials"]:
        params = ", ".join(f"{k}={_short(v)}" for k, v in (r["params"] or {}).items()) or "not yet proposed"
        objective = "&ndash;" if r["objective"] is None else html.escape(_short(r["objective"]))
        mark = " ★" if r["index"] in best else ""
        rows.append(
            f"<tr><td>{r['index']}{mark}</td><td>{r['trial']}</td><td>{r['seed']}</td>"
            f'<td class="state {r["state"]}">{r["state"]}</td><td>{r["episodes"]}/{r["of_episodes"]}</td>'
            f"<td>{objective}</td><td>{html.escape(params)}</td></tr>"
        )
    goals = ", ".join(f"{o['direction']} {o['metric']}" for o in info["objectives"]) or "no objective"
    figure = ""
    if image:
        encoded = base64.b64encode(image).decode()
        figure = (
            f'<figure><img alt="sweep" src="data:image/png;base64,{encoded}">'
            "<figcaption>sweep.png</figcaption></figure>"
        )
    marked = "Pareto front" if info["pareto"] else "best trial"
    return f"""<h2 id="sweep">Sweep ({html.escape(info["method"])}: {html.escape(goals)})</h2>
<p>{len(info["trials"])} trial run(s); ★ {marked}; {info["pruned"]} pruned, saving about
{info["vm_hours_saved_by_pruning"]:.3f} VM-hours.
<code>python publisher.py best BATCH_ID</code> prints the best as a batch-file entry.</p>
<table id="trials"><thead><tr><th>#</th><th>trial</th><th>seed</th><th>state</th><th>episodes</th><th>objective</th>
<th>parameters</th></tr></thead><tbody>{"".join(rows)}</tbody></table>
{figure}
"""
