"""The original ``DRL_battery.py`` command-line flags, as one table derived from the contract.

Both the trainer's argparse front end and the legacy command parser of the control plane are built
from this table, so a flag cannot be accepted by one and refused by the other. The table itself is
read off the fields of ``contracts.Experiment`` and ``contracts.Hyperparameters``: a field annotated
with ``options.Option`` is a flag, its help is the field's description, its kind the field's type.
Only the two flags the original tool had for the instance group, which are not experiment fields,
are declared here. Long and short spellings are those of the original tool.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from sinergym_cloud.contracts import Experiment, Hyperparameters
from sinergym_cloud.options import option_of

Kind = Literal["bool", "int", "float", "str", "runperiod"]


@dataclass(frozen=True)
class Flag:
    """One command-line flag."""

    long: str
    short: str | None
    dest: str
    kind: Kind
    help: str
    # For hyperparameters: the algorithms whose constructor takes it. None = not a hyperparameter.
    algorithms: frozenset[str] | None = None


# The original cloud_manager.py added these to every command; they describe the VM, not the experiment.
COMPATIBILITY_FLAGS: tuple[Flag, ...] = (
    Flag(
        "--group_name",
        "-group",
        "group_name",
        "str",
        "Instance group name (the original cloud_manager.py added it; kept for compatibility).",
    ),
    Flag(
        "--auto_delete",
        "-del",
        "auto_delete",
        "bool",
        "Accepted for compatibility and ignored: the cleanup function always removes the VM.",
    ),
)

# The Experiment fields that are not flags, and why: each is structured data, or not the original tool's.
NOT_FLAGS: dict[str, str] = {
    "hyperparameters": "nested: each of its fields is a flag of its own (HYPERPARAMETER_FLAGS)",
    "mode": "the publisher's --check and `python -m trainer check` set it",
    "label": "a Sinergym config's experiment_name (schema 2)",
    "algorithm_parameters": "a Sinergym config's algorithm.parameters (schema 2)",
    "wrappers": "a Sinergym config's wrappers, with their arguments (schema 2)",
    "env_params": "a Sinergym config's env_params (schema 2)",
    "initial_model": "a batch file's or config's model to start from (schema 2)",
}


def _kind(annotation: Any) -> Kind:
    """The flag kind of a field's type: ``int | None`` is an int, a Literal or a constrained str a str."""
    if get_origin(annotation) is typing.Annotated:  # a constrained type, e.g. SafePath
        return _kind(get_args(annotation)[0])
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (types.UnionType, typing.Union) and len(args) == 1:
        return _kind(args[0])
    if get_origin(annotation) is tuple:
        return "runperiod"
    if get_origin(annotation) is Literal or annotation is str:
        return "str"
    if annotation in (bool, int, float):
        return typing.cast(Kind, annotation.__name__)
    raise TypeError(f"no flag kind for a field of type {annotation!r}")


def flags_of(model: type[BaseModel], hyperparameters: bool = False) -> tuple[Flag, ...]:
    """The flags of ``model``'s fields that carry an ``Option``, in field order."""
    table = []
    for name, field in model.model_fields.items():
        option = option_of(field)
        if option is None:
            continue
        if not field.description:
            raise TypeError(f"{model.__name__}.{name} is a flag without a description (its --help)")
        algorithms = (option.algorithms or frozenset()) if hyperparameters else None
        long = option.long or f"--{name}"
        table.append(Flag(long, option.short, name, _kind(field.annotation), field.description, algorithms))
    return tuple(table)


RUN_FLAGS: tuple[Flag, ...] = flags_of(Experiment) + COMPATIBILITY_FLAGS
HYPERPARAMETER_FLAGS: tuple[Flag, ...] = flags_of(Hyperparameters, hyperparameters=True)

ALL_FLAGS: tuple[Flag, ...] = RUN_FLAGS + HYPERPARAMETER_FLAGS

HYPERPARAMETERS: dict[str, Flag] = {f.dest: f for f in HYPERPARAMETER_FLAGS}


def by_spelling() -> dict[str, Flag]:
    """Every accepted spelling (long and short) to its flag."""
    table: dict[str, Flag] = {}
    for flag in ALL_FLAGS:
        table[flag.long] = flag
        if flag.short:
            table[flag.short] = flag
    return table
