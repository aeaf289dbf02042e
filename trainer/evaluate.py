"""``python -m trainer evaluate``: deterministic episodes of a saved model, metrics to MLflow.

```sh
python -m trainer evaluate --model gs://BUCKET/BATCH/EXPERIMENT/models/model.zip \\
    --environment Eplus-5zone-hot-continuous-v1 --algorithm PPO --episodes 2 --runperiod 1 1 1991 7 1 1991
```

The model is fetched as a fine-tuning start would be (trainer/initial_model.py): with its
observation normalization statistics when they are beside it (then the environment normalizes
with them, frozen). ``--config`` takes a Sinergym training YAML for the environment's reward,
wrappers and parameters. Each episode's summary (reward, comfort violation, energy) is logged to
an MLflow run (experiment ``--mlflow-experiment``) and printed as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sinergym_cloud import contracts
from sinergym_cloud.contracts import Experiment, InitialModel, summarise


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainer evaluate", description=__doc__.splitlines()[0] if __doc__ else None
    )
    p.add_argument("--model", required=True, help="model.zip: gs://..., a local path, or a folder holding model.zip")
    p.add_argument("--environment", "-env", help="Sinergym environment id (or from --config)")
    p.add_argument("--algorithm", "-alg", help="the model's algorithm (default PPO, or from --config)")
    p.add_argument("--episodes", "-ep", type=int, default=1, help="evaluation episodes (default 1)")
    p.add_argument("--config", type=Path, help="a Sinergym training YAML: reward, wrappers, environment parameters")
    p.add_argument("--runperiod", nargs=6, type=int, metavar=("D1", "M1", "Y1", "D2", "M2", "Y2"))
    p.add_argument("--seed", "-sd", type=int)
    p.add_argument("--reward", "-rw")
    p.add_argument(
        "--mlflow-experiment", default="sinergym-evaluations", help="MLflow experiment (default %(default)s)"
    )
    p.add_argument("--workdir", type=Path, default=Path("."), help="where Sinergym's output goes (default .)")
    return p


def experiment_for(args: argparse.Namespace) -> Experiment:
    fields: dict[str, Any] = {}
    if args.config:
        from sinergym_cloud.inputs import batchfile

        fields = dict(batchfile.load_config(args.config).fields)
        fields.pop("initial_model", None)
        fields["evaluation"] = False
    for key in ("environment", "algorithm", "seed", "reward"):
        if getattr(args, key) is not None:
            fields[key] = getattr(args, key)
    if args.runperiod:
        fields["runperiod"] = tuple(args.runperiod)
    if "environment" not in fields:
        raise ValueError("--environment is required (or --config)")
    fields["episodes"] = args.episodes
    fields["initial_model"] = {"uri": args.model}
    return Experiment.model_validate(fields)


def _storage() -> Any:
    from sinergym_cloud.config import Settings
    from sinergym_cloud.gcp.clients import Clients

    if os.environ.get("GOOGLE_CLOUD_PROJECT"):
        return Clients(Settings.from_env()).storage
    from google.cloud import storage

    return storage.Client()


def evaluate(experiment: Experiment, workdir: Path, mlflow_experiment: str) -> dict[str, Any]:
    """Run the episodes; returns the per-episode summaries and their means."""
    import mlflow
    from stable_baselines3.common.vec_env import DummyVecEnv

    from trainer import envs, initial_model, registry, tracking
    from trainer.episodes import _Accumulator

    assert experiment.initial_model is not None
    envs.ensure_energyplus()
    workdir = workdir.resolve()
    out = workdir / "output"
    out.mkdir(parents=True, exist_ok=True)
    loaded = initial_model.fetch(experiment.initial_model, workdir / "model", _storage, None, replay_buffer=False)
    if loaded.norm_stats and not experiment.normalization and experiment.wrappers is None:
        # The model was trained on normalized observations: evaluate it on the same scale.
        experiment = experiment.model_copy(update={"normalization": True})
    os.chdir(out)
    name = contracts.experiment_name(experiment, dt.datetime.now(dt.UTC), 0).replace("-episodes-", "-evaluate-")
    vec_env = DummyVecEnv([lambda: envs.make_env(experiment, name, loaded.norm_stats, evaluation=True)])
    params = registry.hyperparameters(experiment)
    params.pop("sigma", None)
    model = initial_model.load(registry.algos()[experiment.algorithm], loaded, vec_env, params)
    from trainer.context import Context

    ctx = Context(experiment=experiment, name=name, mlflow_experiment=mlflow_experiment)
    run = tracking.start(ctx, None)
    episodes: list[dict[str, float]] = []
    failed = True
    try:
        mlflow.log_params({"model": loaded.source, "env": experiment.environment, "episodes": experiment.episodes,
                           "algorithm": experiment.algorithm, "deterministic": True})  # fmt: skip
        obs = vec_env.reset()
        acc = _Accumulator()
        while len(episodes) < experiment.episodes:
            action, _ = model.predict(obs, deterministic=True)
            obs, rewards, dones, infos = vec_env.step(action)
            acc.add(float(rewards[0]), infos[0])
            if dones[0]:
                summary = acc.summary()
                episodes.append(summary)
                mlflow.log_metrics({f"eval/{k}": v for k, v in summary.items()}, step=len(episodes))
                acc = _Accumulator()
        means = {k: sum(e[k] for e in episodes) / len(episodes) for k in episodes[0]}
        mlflow.log_metrics({f"summary/mean_{k}": v for k, v in means.items()})
        failed = False
    finally:
        vec_env.close()
        tracking.end(None, failed)
    return {"model": loaded.source, "mlflow_run_id": run.info.run_id, "episodes": episodes, "mean": means}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        experiment = experiment_for(args)
    except ValidationError as exc:
        parser.error(summarise(exc))
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    assert isinstance(experiment.initial_model, InitialModel)
    tracking_problem = _tracking_problem()
    if tracking_problem:
        parser.error(tracking_problem)
    result = evaluate(experiment, args.workdir, args.mlflow_experiment)
    print(json.dumps(result, indent=2))
    return 0


def _tracking_problem() -> str | None:
    from trainer import tracking

    return tracking.uri_problem(os.environ.get("MLFLOW_TRACKING_URI"), os.environ)


if __name__ == "__main__":
    sys.exit(main())
