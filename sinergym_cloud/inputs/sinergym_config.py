"""Sinergym's training YAML (``train_agent_PPO.yaml`` and friends) as an Experiment.

Sinergym's own script (``scripts/train/local_confs/train_agent_local_conf.py -conf FILE``) reads a
YAML file with ``experiment_name``, ``environment``, ``episodes``, ``algorithm``, ``env_params``,
``wrappers``, ``evaluation``, ``model``, ``wandb`` and ``cloud``. This module maps every key onto the
structured Experiment, or refuses it with the key named: nothing in the file is imported or run.
``module:Class`` names are looked up in catalog's allowlists (Sinergym's wrappers and rewards,
SB3's and sb3-contrib's algorithms).

The Python expressions Sinergym's script evaluates (``action_noise: NormalActionNoise(...)``,
``policy_kwargs: dict(...)``, a wrapper argument ``gym.spaces.Box(...)``) are read as data by
``expressions`` (an allowlist over the syntax tree). ``env_yaml_config`` and ``wrappers_yaml_config``
name YAML files beside the config: they are read on the user's machine (``read``), merged as
Sinergym merges them, and what travels is data.

Pure code: the publisher maps the file before anything is sent, the trainer maps it for
``python -m trainer --config FILE``; both load the YAML through ``batchfile.read_yaml``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sinergym_cloud import catalog
from sinergym_cloud.inputs import expressions

TOP_KEYS = {
    "experiment_name",
    "environment",
    "episodes",
    "algorithm",
    "model",
    "evaluation",
    "env_yaml_config",
    "env_deep_update",
    "env_params",
    "wrappers_yaml_config",
    "wrappers",
    "wandb",
    "cloud",
}
ALGORITHM_KEYS = {"name", "log_interval", "parameters"}
# Algorithm arguments that take a class or an object: accepted only as null (the library's default).
# (action_noise is an object too: read from its expression by expressions.action_noise.)
NULL_ONLY_PARAMETERS = {
    "rollout_buffer_class",
    "rollout_buffer_kwargs",
    "replay_buffer_class",
    "replay_buffer_kwargs",
    "env",
    "_init_setup_model",
}
ENV_PARAM_KEYS = {
    "seed",
    "reward",
    "reward_kwargs",
    "weather_variability",
    "building_config",
    "timesteps_per_hour",
    "env_name",  # replaced by the experiment's name, as Sinergym's own script replaces it
}
BUILDING_KEYS = {"runperiod", "timesteps_per_hour"}
WANDB_KEYS = {"project", "entity", "group", "tags", "run_name", "job_type", "dump_frequency", "artifact_save"}
WANDB_TO_WRAPPER = {"project": "project_name", "entity": "entity", "group": "group", "tags": "tags",
                    "run_name": "run_name", "job_type": "job_type", "dump_frequency": "dump_frequency",
                    "artifact_save": "artifact_save"}  # fmt: skip
MODEL_KEYS = {"local_path", "bucket_path", "batch_id", "experiment"}
MODEL_WANDB_KEYS = {
    "project",
    "entity",
    "artifact_name",
    "artifact_type",
    "artifact_tag",
    "artifact_path",
    "model_path",
}
CLOUD_KEYS = {"remote_store", "auto_delete", "group_name"}


class ConfigError(ValueError):
    """A key of the config that this project cannot honour, named."""


# Reads a file a config names (env_yaml_config, wrappers_yaml_config): (key, file name) -> parsed YAML.
FileReader = Callable[[str, str], Any]


@dataclass
class Mapped:
    """The Experiment fields a config describes, and what belongs to the batch rather than the experiment."""

    fields: dict[str, Any]
    results_bucket: str | None = None  # cloud.remote_store
    notes: list[str] = field(default_factory=list)


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, not {type(value).__name__}")
    return value


def _unknown(data: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        names = ", ".join(f"{where}.{k}" if where else k for k in extra)
        raise ConfigError(f"{names}: not a key this project maps (allowed: {', '.join(sorted(allowed))})")


def map_config(data: Any, read: FileReader | None = None) -> Mapped:
    """Experiment fields for a Sinergym training config (already parsed YAML); ``read`` reads the
    files it names (relative to the config), None where there is no file to read them beside."""
    if not isinstance(data, dict):
        raise ConfigError("a Sinergym config is a mapping with environment, episodes, algorithm, ...")
    _unknown(data, TOP_KEYS, "")
    try:
        return _map(data, read)
    except expressions.ExpressionError as exc:
        raise ConfigError(str(exc)) from None


def _included(data: dict[str, Any], key: str, read: FileReader | None) -> Any:
    """The parsed contents of the file a config's ``key`` names, or None."""
    name = data.get(key)
    if name is None:
        return None
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{key}: expected the name of a YAML file, not {type(name).__name__}")
    if read is None:
        raise ConfigError(f"{key}: {name!r} is read beside the config's own file; give the config as a file")
    return read(key, name)


def _map(data: dict[str, Any], read: FileReader | None) -> Mapped:
    env_file = _included(data, "env_yaml_config", read)
    if env_file is not None:
        env_file = _mapping(env_file, f"env_yaml_config {data['env_yaml_config']}")
        _unknown(env_file, ENV_PARAM_KEYS, f"env_yaml_config {data['env_yaml_config']}: env_params")
    wrappers_file = _included(data, "wrappers_yaml_config", read)
    if "environment" not in data:
        raise ConfigError("environment: missing")
    fields: dict[str, Any] = {"environment": data["environment"]}
    mapped = Mapped(fields)
    if data.get("experiment_name") is not None:
        fields["label"] = str(data["experiment_name"])
    if data.get("episodes") is not None:
        fields["episodes"] = data["episodes"]
    _algorithm(_mapping(data.get("algorithm"), "algorithm"), fields)
    _evaluation(_mapping(data.get("evaluation"), "evaluation"), fields)
    params = _mapping(data.get("env_params"), "env_params")
    if env_file is not None:  # Sinergym: the file's parameters, deep-updated with env_params
        params = deep_update(env_file, params)
    _env_params(params, data.get("env_deep_update", True), fields)
    wrappers = data.get("wrappers")
    if wrappers_file is not None:
        wrappers = _merge_wrappers(wrappers_file, wrappers, str(data["wrappers_yaml_config"]))
    _wrappers(wrappers, _mapping(data.get("wandb"), "wandb"), fields)
    if data.get("model") is not None:
        fields["initial_model"] = _model(_mapping(data["model"], "model"))
    _cloud(_mapping(data.get("cloud"), "cloud"), mapped)
    return mapped


def _algorithm(algorithm: dict[str, Any], fields: dict[str, Any]) -> None:
    _unknown(algorithm, ALGORITHM_KEYS, "algorithm")
    name = algorithm.get("name")
    if name is not None:
        resolved = catalog.resolve_algorithm_class(str(name))
        if resolved is None:
            known = ", ".join(f"{m}:{a}" for a, m in catalog.ALGORITHM_MODULES.items())
            raise ConfigError(f"algorithm.name {name!r}: not an allowed algorithm (allowed: {known})")
        fields["algorithm"] = resolved
    if algorithm.get("log_interval") is not None:
        fields["log_interval"] = algorithm["log_interval"]
    parameters = dict(_mapping(algorithm.get("parameters"), "algorithm.parameters"))
    for key in sorted(NULL_ONLY_PARAMETERS & set(parameters)):
        value = parameters.pop(key)
        if key == "_init_setup_model" and value in (True, None):
            continue
        if value is not None:
            raise ConfigError(f"algorithm.parameters.{key}: only null (the library's default) is supported")
    for key in ("action_noise", "policy_kwargs", "train_freq"):
        if key in parameters:
            parameters[key] = parameter_value(key, parameters[key], f"algorithm.parameters.{key}")
    if parameters.get("action_noise") is None:
        parameters.pop("action_noise", None)
    tensorboard = parameters.pop("tensorboard_log", None)
    if tensorboard is not None:
        fields["tensorboard"] = str(tensorboard)
    seed = parameters.pop("seed", None)
    if seed is not None:
        fields["seed"] = seed
    if parameters.get("policy_kwargs") is None:
        parameters.pop("policy_kwargs", None)
    fields["algorithm_parameters"] = parameters


def parameter_value(key: str, value: Any, where: str) -> Any:
    """An algorithm parameter as the contract takes it: the ones Sinergym's users give as Python
    expressions (``action_noise``, ``policy_kwargs``, ``train_freq``) read as data."""
    if key == "action_noise":
        return expressions.action_noise(value, where)
    if key == "policy_kwargs":
        return expressions.mapping(value, where)
    if key == "train_freq":
        return expressions.sequence(value, where)
    return value


def deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Sinergym's deep_update: nested mappings merged, everything else replaced."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


def _merge_wrappers(file: Any, listed: Any, name: str) -> list[dict[str, Any]]:
    """A wrappers_yaml_config file (``{module:Class: {arguments}}``, in order) with the config's own
    ``wrappers`` laid over it as Sinergym does: a wrapper in both gets its arguments deep-updated,
    one only in the config comes after the file's."""
    if not isinstance(file, dict):
        raise ConfigError(f"wrappers_yaml_config {name}: expected a mapping of module:Class to arguments")
    merged: dict[str, Any] = {}
    keys: dict[str, str] = {}  # resolved class name -> the key it was given under
    for reference, kwargs in file.items():
        resolved = catalog.resolve_wrapper_class(str(reference)) or str(reference)
        keys[resolved] = str(reference)
        merged[str(reference)] = _mapping(kwargs, f"wrappers_yaml_config {name}: {reference}")
    if listed is not None and not isinstance(listed, list):
        raise ConfigError("wrappers: expected a list of {module:Class: {arguments}}")
    for n, item in enumerate(listed or []):
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"wrappers[{n}]: expected one `module:Class: {{arguments}}` mapping")
        ((reference, kwargs),) = item.items()
        resolved = catalog.resolve_wrapper_class(str(reference)) or str(reference)
        key = keys.setdefault(resolved, str(reference))
        merged[key] = deep_update(merged.get(key) or {}, _mapping(kwargs, f"wrappers[{n}]"))
    return [{reference: kwargs} for reference, kwargs in merged.items()]


def _evaluation(evaluation: dict[str, Any], fields: dict[str, Any]) -> None:
    _unknown(evaluation, {"eval_freq", "eval_length"}, "evaluation")
    if evaluation:
        fields["evaluation"] = True
        for key in ("eval_freq", "eval_length"):
            if evaluation.get(key) is not None:
                fields[key] = evaluation[key]


def _env_params(params: dict[str, Any], deep: Any, fields: dict[str, Any]) -> None:
    _unknown(params, ENV_PARAM_KEYS, "env_params")
    if not isinstance(deep, bool):
        raise ConfigError("env_deep_update: expected true or false")
    if params.get("seed") is not None:
        fields["seed"] = params["seed"]
    reward = params.get("reward")
    if reward is not None:
        resolved = catalog.resolve_reward_class(str(reward))
        if resolved is None:
            known = ", ".join(f"sinergym.utils.rewards:{r}" for r in sorted(catalog.REWARD_CLASSES))
            raise ConfigError(f"env_params.reward {reward!r}: not an allowed reward (allowed: {known})")
        fields["reward"] = resolved
    env: dict[str, Any] = {"deep_update": deep}
    if params.get("reward_kwargs") is not None:
        env["reward_kwargs"] = _mapping(params["reward_kwargs"], "env_params.reward_kwargs")
    if params.get("weather_variability") is not None:
        env["weather_variability"] = _mapping(params["weather_variability"], "env_params.weather_variability")
    building = _mapping(params.get("building_config"), "env_params.building_config")
    _unknown(building, BUILDING_KEYS, "env_params.building_config")
    if building.get("runperiod") is not None:
        fields["runperiod"] = tuple(building["runperiod"])
    per_hour = building.get("timesteps_per_hour", params.get("timesteps_per_hour"))
    if per_hour is not None:
        env["timesteps_per_hour"] = per_hour
    if set(env) != {"deep_update"} or not deep:
        fields["env_params"] = env


def _wrappers(wrappers: Any, wandb: dict[str, Any], fields: dict[str, Any]) -> None:
    _unknown(wandb, WANDB_KEYS, "wandb")
    if wrappers is None and not wandb:
        return
    if wrappers is None:
        wrappers = []
    if not isinstance(wrappers, list):
        raise ConfigError("wrappers: expected a list of {module:Class: {arguments}}")
    listed: list[dict[str, Any]] = []
    for n, item in enumerate(wrappers):
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"wrappers[{n}]: expected one `module:Class: {{arguments}}` mapping")
        ((reference, kwargs),) = item.items()
        name = catalog.resolve_wrapper_class(str(reference))
        if name is None:
            raise ConfigError(f"wrappers[{n}] {reference!r}: {catalog.wrapper_refusal(str(reference))}")
        arguments = dict(_mapping(kwargs, f"wrappers[{n}]"))
        for key, value in arguments.items():
            if expressions.is_space(value):  # Sinergym evaluates gym.spaces.* strings: read as data here
                arguments[key] = expressions.space(value, f"wrappers[{n}].{name}.{key}")
        listed.append({"name": name, "kwargs": arguments})
    if wandb:
        # The wandb section: Sinergym's WandBLogger with these settings (added after the logger if not listed).
        settings = {WANDB_TO_WRAPPER[k]: v for k, v in wandb.items() if v is not None}
        existing = [w for w in listed if w["name"] == "WandBLogger"]
        if existing:
            existing[0]["kwargs"].update(settings)
        else:
            if not any(w["name"] == "LoggerWrapper" for w in listed):
                listed.append({"name": "LoggerWrapper", "kwargs": {}})
            listed.append({"name": "WandBLogger", "kwargs": settings})
    names = [w["name"] for w in listed]
    fields["wrappers"] = listed
    fields["normalization"] = "NormalizeObservation" in names
    fields["logger"] = "LoggerWrapper" in names
    fields["multiobs"] = "MultiObsWrapper" in names


def _model(model: dict[str, Any]) -> dict[str, Any]:
    if "artifact_name" in model:
        _unknown(model, MODEL_WANDB_KEYS, "model")
        artifact = {k: v for k, v in model.items() if k != "artifact_path" and v is not None}
        return {"wandb": artifact}
    _unknown(model, MODEL_KEYS, "model")
    given = {k: v for k, v in model.items() if v is not None}
    if "local_path" in given and "bucket_path" in given:
        raise ConfigError("model: local_path and bucket_path are exclusive")
    if "local_path" in given or "bucket_path" in given:
        return {"uri": str(given.get("bucket_path") or given.get("local_path"))}
    return given


def _cloud(cloud: dict[str, Any], mapped: Mapped) -> None:
    _unknown(cloud, CLOUD_KEYS, "cloud")
    store = cloud.get("remote_store")
    if store:
        mapped.fields["remote_store"] = True
        if isinstance(store, str):
            mapped.results_bucket = store.removeprefix("gs://").strip("/")
    if cloud.get("auto_delete") is not None or cloud.get("group_name") is not None:
        # Every VM is deleted through its group when its experiment ends, always.
        mapped.notes.append("cloud.auto_delete: always on here (each VM is deleted when its experiment ends)")
