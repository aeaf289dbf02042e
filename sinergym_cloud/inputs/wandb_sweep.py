"""Weights & Biases sweep configurations, as Sinergym's users write them, mapped onto a sweep.

Sinergym's ``*_sweep_example.yaml`` files are W&B sweeps over its ``launch_agent.py``: ``method``,
``metric`` ({name, goal}), ``parameters`` whose leaves are ``value`` (fixed), ``values`` (a grid or a
choice), or ``distribution`` with ``min``/``max`` (uniform, log_uniform_values, int_uniform), and
whose groups nest under ``parameters`` (``algorithm_parameters``, ``evaluation``, ``env_params``).
A batch file's ``sweep_config: FILE`` takes such a file as it is:

- the fixed values form a Sinergym config in that key layout (``algorithm`` and
  ``algorithm_parameters`` side by side), mapped by sinergym_config.py into the base experiment;
- every varying leaf becomes a sweep parameter over the Experiment field it maps to, with its
  values mapped the same way (``stable_baselines3:PPO`` -> ``PPO``); ``env_params.seed`` values
  become the sweep's seeds;
- ``method`` grid and random are Optuna's, ``bayes`` is TPE; ``run_cap`` is the number of trials;
  ``early_terminate`` (hyperband, ``min_iter``) is successive halving after ``min_iter`` episodes.
"""

from __future__ import annotations

from typing import Any

from sinergym_cloud import catalog
from sinergym_cloud.inputs import sinergym_config
from sinergym_cloud.inputs.sinergym_config import ConfigError

TOP_KEYS = {"program", "method", "metric", "parameters", "name", "description", "project", "entity",
            "early_terminate", "run_cap", "command"}  # fmt: skip
LEAF_KEYS = {"value", "values", "distribution", "min", "max", "probabilities", "mu", "sigma", "q"}
METHODS = {"grid": "grid", "random": "random", "bayes": "tpe"}
DISTRIBUTIONS = {
    "uniform": "uniform",
    "log_uniform_values": "loguniform",
    "int_uniform": "int",
    "categorical": "choice",
}
# A W&B metric name (what Sinergym logs) -> the completion metric that is the trial's objective.
METRICS = {
    "eval/mean_reward": "best_eval_mean_reward",
    "eval/best_mean_reward": "best_eval_mean_reward",
}
# Where a varying leaf of Sinergym's layout lands in the Experiment (prefixes map their children).
FIELDS = {
    "environment": "environment",
    "episodes": "episodes",
    "log_interval": "log_interval",
    "algorithm": "algorithm",
    "evaluation.eval_freq": "eval_freq",
    "evaluation.eval_length": "eval_length",
    "env_params.reward": "reward",
    "env_params.weather_variability": "env_params.weather_variability",
    "env_params.timesteps_per_hour": "env_params.timesteps_per_hour",
}
PREFIXES = {"algorithm_parameters.": "algorithm_parameters.", "env_params.reward_kwargs.": "env_params.reward_kwargs."}


def _is_leaf(node: Any) -> bool:
    return isinstance(node, dict) and bool(set(node) & LEAF_KEYS) and "parameters" not in node


def _walk(node: dict[str, Any], where: str, fixed: dict[str, Any], varying: dict[str, dict[str, Any]]) -> None:
    for key, spec in node.items():
        path = f"{where}{key}"
        if _is_leaf(spec):
            extra = sorted(set(spec) - LEAF_KEYS)
            if extra:
                raise ConfigError(f"parameters.{path}: {', '.join(extra)} is not a W&B parameter key")
            values = spec.get("values")
            if "value" in spec:
                fixed[path] = spec["value"]
            elif isinstance(values, list) and len(values) == 1:
                fixed[path] = values[0]
            else:
                varying[path] = spec
        elif isinstance(spec, dict) and isinstance(spec.get("parameters"), dict):
            _walk(spec["parameters"], f"{path}.", fixed, varying)
        else:
            raise ConfigError(f"parameters.{path}: expected value, values, distribution or a nested parameters mapping")


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = doc
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return doc


def _as_sinergym(config: dict[str, Any]) -> dict[str, Any]:
    """Sinergym's launch_agent layout (algorithm beside algorithm_parameters) as its training YAML's."""
    doc = dict(config)
    algorithm: dict[str, Any] = {}
    if "algorithm" in doc:
        algorithm["name"] = doc.pop("algorithm")
    if "log_interval" in doc:
        algorithm["log_interval"] = doc.pop("log_interval")
    if "algorithm_parameters" in doc:
        algorithm["parameters"] = doc.pop("algorithm_parameters")
    if algorithm:
        doc["algorithm"] = algorithm
    return doc


def _field(path: str) -> str:
    if path in FIELDS:
        return FIELDS[path]
    for prefix, target in PREFIXES.items():
        if path.startswith(prefix):
            return target + path[len(prefix) :]
    raise ConfigError(f"parameters.{path}: a sweep cannot vary this key (it varies {', '.join(sorted(FIELDS))}, "
                      f"algorithm_parameters.* and env_params.reward_kwargs.*)")  # fmt: skip


def _value(path: str, value: Any) -> Any:
    """A varying leaf's value as the Experiment field takes it (class references resolved, the
    algorithm parameters Sinergym gives as Python expressions read as data)."""
    if path.startswith("algorithm_parameters."):
        key = path.removeprefix("algorithm_parameters.")
        try:
            return sinergym_config.parameter_value(key, value, f"parameters.{path}")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if path == "algorithm":
        resolved = catalog.resolve_algorithm_class(str(value))
    elif path == "env_params.reward":
        resolved = catalog.resolve_reward_class(str(value))
    else:
        return value
    if resolved is None:
        raise ConfigError(f"parameters.{path}: {value!r} is not an allowed class")
    return resolved


def _param(path: str, spec: dict[str, Any], method: str) -> dict[str, Any]:
    values = spec.get("values")
    if values is not None:
        if not isinstance(values, list) or not values:
            raise ConfigError(f"parameters.{path}.values: expected a non-empty list")
        return {"grid" if method == "grid" else "choice": [_value(path, v) for v in values]}
    dist = spec.get("distribution", "uniform" if isinstance(spec.get("min"), float) else "int_uniform")
    if dist not in DISTRIBUTIONS:
        raise ConfigError(f"parameters.{path}.distribution {dist!r}: supported are {', '.join(DISTRIBUTIONS)}")
    if dist == "categorical":
        raise ConfigError(f"parameters.{path}: a categorical distribution takes values")
    if "min" not in spec or "max" not in spec:
        raise ConfigError(f"parameters.{path}: {dist} needs min and max")
    return {DISTRIBUTIONS[dist]: [spec["min"], spec["max"]]}


def map_sweep(
    data: Any, read: sinergym_config.FileReader | None = None
) -> tuple[sinergym_config.Mapped, dict[str, Any]]:
    """The base experiment's fields (as sinergym_config maps them) and the ``sweep`` section; ``read``
    reads the files its fixed values name (env_yaml_config, wrappers_yaml_config)."""
    if not isinstance(data, dict) or not isinstance(data.get("parameters"), dict):
        raise ConfigError("a W&B sweep config is a mapping with method, metric and parameters")
    extra = sorted(set(data) - TOP_KEYS)
    if extra:
        raise ConfigError(
            f"{', '.join(extra)}: not a W&B sweep key this project maps (allowed: {', '.join(sorted(TOP_KEYS))})"
        )
    method = METHODS.get(str(data.get("method", "grid")))
    if method is None:
        raise ConfigError(f"method {data.get('method')!r}: supported are {', '.join(METHODS)}")
    fixed: dict[str, Any] = {}
    varying: dict[str, dict[str, Any]] = {}
    _walk(data["parameters"], "", fixed, varying)
    mapped = sinergym_config.map_config(_as_sinergym(_nest(fixed)), read)
    section: dict[str, Any] = {"method": method, "parameters": {}}
    seeds = varying.pop("env_params.seed", None) or varying.pop("algorithm_parameters.seed", None)
    if seeds is not None:
        if not isinstance(seeds.get("values"), list):
            raise ConfigError("parameters.env_params.seed: give the seeds as values")
        section["seeds"] = seeds["values"]
    for path, spec in varying.items():
        section["parameters"][_field(path)] = _param(path, spec, method)
    metric = data.get("metric")
    if isinstance(metric, dict) and metric.get("name"):
        name = str(metric["name"])
        section["objective"] = {"metric": METRICS.get(name, name), "direction": metric.get("goal", "maximize")}
    if data.get("run_cap") is not None:
        section["trials"] = data["run_cap"]
    early = data.get("early_terminate")
    if isinstance(early, dict):
        section["pruner"] = {"name": "successive_halving", "min_episodes": early.get("min_iter", 1)}
    return mapped, section
