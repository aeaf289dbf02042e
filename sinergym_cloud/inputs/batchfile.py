"""Declarative batches: a YAML file describing a study, turned into a Batch.

```yaml
batch_id: hot-vs-mixed-1            # optional; resubmitting the same id is a no-op
group_name: sinergym-group          # optional (default sinergym-group)
zone: europe-west1-b                # optional
# zones: [europe-west1-b, europe-west1-c]  # optional: zones of one region to fail over to, in order
template_name: sinergym-template    # optional
defaults:                           # optional: applied to every experiment below
  episodes: 3
  runperiod: [1, 1, 1991, 7, 1, 1991]
  logger: true
experiments:
  - environment: Eplus-5zone-hot-continuous-v1
    algorithm: PPO
    seeds: [1, 2, 3]                # one experiment per seed
    hyperparameters: {n_steps: 256}
  - command: python3 DRL_battery.py --environment Eplus-5zone-mixed-discrete-v1 --algorithm DQN --seed 7
  - config: sinergym/train_agent_PPO.yaml   # Sinergym's own training YAML, unchanged
    runperiod: [1, 1, 1991, 7, 1, 1991]     # other keys (and defaults) override what it says
```

Each entry is Experiment fields (see the Batch JSON Schema in docs/), a legacy ``command``, or a
Sinergym training ``config`` (a path relative to the batch file; see sinergym_config.py).

A ``sweep:`` section (sweep_spec.py) makes the batch a search over its one experiment's fields;
``sweep_config: FILE`` takes a W&B sweep configuration in Sinergym's layout instead (wandb_sweep.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sinergym_cloud.contracts import Experiment, excerpt, summarise
from sinergym_cloud.errors import InvalidInput
from sinergym_cloud.inputs import legacy, sinergym_config, wandb_sweep

BATCH_KEYS = {
    "batch_id",
    "group_name",
    "zone",
    "zones",
    "template_name",
    "results_bucket",
    "max_parallel",
    "max_vm_hours",
    "defaults",
    "experiments",
    "sweep",
    "sweep_config",
}
MAX_FILE_BYTES = 1024 * 1024  # a study of thousands of experiments fits in far less


class BatchFileError(InvalidInput):
    """A batch file that cannot be read as a batch; the message names the file, the key and why."""


class _NoAliases(yaml.SafeLoader):
    """YAML without aliases (nor ``<<`` merges, which need them): a few hundred bytes of nested
    aliases expand to gigabytes (the "billion laughs"); a batch file never needs them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a batch file", event.start_mark
            )
        return super().compose_node(parent, index)


def _read(path: Path) -> str:
    with path.open("rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise BatchFileError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BatchFileError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None


def load(path: Path) -> dict[str, Any]:
    """The Batch fields a YAML batch file describes (experiments already validated)."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise BatchFileError(f"{path}: expected a mapping with an `experiments` list")
    unknown = {str(k)[:40] if isinstance(k, str) else excerpt(k) for k in data if k not in BATCH_KEYS}
    if unknown:
        raise BatchFileError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown)[:10])}; allowed: {', '.join(sorted(BATCH_KEYS))}"
        )
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise BatchFileError(f"{path}: `defaults` must be a mapping, not {excerpt(defaults)}")
    data = {**data, **(_sweep_section(path, data) or {})}
    entries = data.get("experiments")
    if not isinstance(entries, list) or not entries:
        raise BatchFileError(f"{path}: `experiments` must be a non-empty list")
    experiments: list[Experiment] = []
    buckets: set[str] = set()
    for n, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise BatchFileError(f"{path}: experiment {n} must be a mapping")
        try:
            fields = entry
            if "config" in entry:
                fields, bucket = _from_config(path.parent, entry)
                buckets |= {bucket} if bucket else set()
            experiments.extend(_expand(fields, defaults))
        except BatchFileError:
            raise
        except ValidationError as exc:
            raise BatchFileError(f"{path}: experiment {n}: {summarise(exc)}") from None
        except (ValueError, legacy.LegacyCommandError) as exc:
            raise BatchFileError(f"{path}: experiment {n}: {str(exc)[:500]}") from None
    _one_base(path, data, experiments)
    skip = ("defaults", "experiments", "sweep_config")
    fields = {k: v for k, v in data.items() if k not in skip and v is not None}
    fields["experiments"] = experiments
    if buckets and "results_bucket" not in fields:
        if len(buckets) > 1:
            raise BatchFileError(f"{path}: the configs name different cloud.remote_store buckets: {sorted(buckets)}")
        fields["results_bucket"] = buckets.pop()
    return fields


def _one_base(path: Path, data: dict[str, Any], experiments: list[Experiment]) -> None:
    if "sweep" in data and len(experiments) != 1:
        raise BatchFileError(
            f"{path}: a sweep takes one base experiment in `experiments`, not {len(experiments)} "
            "(put the seeds in the sweep: `seeds` or `replicates`)"
        )


def _sweep_section(path: Path, data: dict[str, Any]) -> dict[str, Any] | None:
    """``sweep_config: FILE`` (a W&B sweep, wandb_sweep.py) as the batch's ``sweep`` and its base
    experiment (the one entry of ``experiments``, if given, overrides the file's fields)."""
    if data.get("sweep_config") is None:
        return None
    if "sweep" in data:
        raise BatchFileError(f"{path}: give `sweep` or `sweep_config`, not both")
    file = path.parent / str(data["sweep_config"])
    try:
        mapped, section = wandb_sweep.map_sweep(read_yaml(file), reader(file.parent))
    except sinergym_config.ConfigError as exc:
        raise BatchFileError(f"{file}: {exc}") from None
    entries = data.get("experiments") or [{}]
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        raise BatchFileError(f"{path}: with sweep_config, `experiments` is at most one entry overriding the file")
    base = dict(mapped.fields)
    for key, value in entries[0].items():
        merge = key in ("algorithm_parameters", "env_params") and isinstance(value, dict)
        base[key] = {**(base.get(key) or {}), **value} if merge else value
    out: dict[str, Any] = {"experiments": [base], "sweep": section}
    if mapped.results_bucket and "results_bucket" not in data:
        out["results_bucket"] = mapped.results_bucket
    return out


def read_yaml(path: Path) -> Any:
    """A user's YAML file (a batch file or a Sinergym config), parsed as plain data: size-capped, with a
    safe loader that refuses aliases (a 512-byte alias bomb once took 43 s and 3 GB)."""
    try:
        return yaml.load(_read(path), Loader=_NoAliases)  # noqa: S506 - a SafeLoader, without aliases
    except OSError as exc:
        raise BatchFileError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise BatchFileError(f"{path}: {str(exc)[:500]}") from None
    except RecursionError:
        raise BatchFileError(f"{path}: nested too deeply") from None


def load_config(path: Path) -> sinergym_config.Mapped:
    """A Sinergym training config file, mapped onto Experiment fields (not validated yet)."""
    try:
        return sinergym_config.map_config(read_yaml(path), reader(path.parent))
    except sinergym_config.ConfigError as exc:
        raise BatchFileError(f"{path}: {exc}") from None


def reader(base: Path) -> sinergym_config.FileReader:
    """Reads the YAML files a config names (env_yaml_config, wrappers_yaml_config) relative to ``base``,
    the config's folder, with the same limits as the config itself."""

    def read(key: str, name: str) -> Any:
        file = base / name
        if not file.is_file():
            raise sinergym_config.ConfigError(f"{key}: {file} is not a file")
        try:
            return read_yaml(file)
        except BatchFileError as exc:
            raise sinergym_config.ConfigError(f"{key}: {exc}") from None

    return read


def _from_config(base: Path, entry: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """An entry ``config: FILE`` (plus overriding Experiment fields) as plain Experiment fields."""
    mapped = load_config(base / str(entry["config"]))
    fields = dict(mapped.fields)
    for key, value in entry.items():
        if key == "config":
            continue
        merge = key in ("algorithm_parameters", "env_params") and isinstance(value, dict)
        # Override some of the config's algorithm or environment parameters, keep the rest.
        fields[key] = {**(fields.get(key) or {}), **value} if merge else value
    return fields, mapped.results_bucket


def _expand(entry: dict[str, Any], defaults: dict[str, Any]) -> list[Experiment]:
    if "command" in entry:
        if set(entry) != {"command"}:
            raise ValueError("an entry with `command` takes no other keys")
        command = entry["command"]
        if not isinstance(command, str):
            raise ValueError(f"`command` must be a string, not {excerpt(command)}")
        experiment, _ = legacy.parse_command(command)
        return [experiment]
    fields = {**defaults, **entry}
    seeds = fields.pop("seeds", None)
    if isinstance(fields.get("hyperparameters"), dict) and isinstance(fields.get("algorithm_parameters"), dict):
        # A Sinergym config's parameters, some overridden: one set of algorithm arguments.
        fields["algorithm_parameters"] = {**fields["algorithm_parameters"], **fields.pop("hyperparameters")}
    if "runperiod" in fields and isinstance(fields["runperiod"], list):
        fields["runperiod"] = tuple(fields["runperiod"])
    if seeds is None:
        return [Experiment.model_validate(fields)]
    if not isinstance(seeds, list) or not seeds:
        raise ValueError("`seeds` must be a non-empty list")
    return [Experiment.model_validate({**fields, "seed": seed}) for seed in seeds]
