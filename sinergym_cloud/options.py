"""Field metadata that makes a contract field a command-line option, declared on the field itself.

An ``Experiment`` or ``Hyperparameters`` field annotated with ``Option(...)`` is also a flag of the
original ``DRL_battery.py`` (``python -m trainer`` and the legacy command strings); the flag's help is
the field's ``description``. ``flags`` builds its table from these, so an option is declared once:

    episodes: Annotated[int, Option("-ep")] = Field(1, ge=1, description="Number of training episodes.")

This module imports nothing of the project, so ``contracts`` can use it and ``flags`` can read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

ON_POLICY = frozenset({"PPO", "A2C"})
OFF_POLICY = frozenset({"DQN", "DDPG", "SAC", "TD3"})
ALL = ON_POLICY | OFF_POLICY
ACTOR_CRITIC_OFF = frozenset({"DDPG", "SAC", "TD3"})


@dataclass(frozen=True)
class Option:
    """This field is a command-line flag: ``--<field name>`` (or ``long``), and ``short`` if the
    original tool had one. ``algorithms``: for a hyperparameter, the algorithms whose constructor
    takes it (anything else is refused for it)."""

    short: str | None = None
    long: str | None = None
    algorithms: frozenset[str] | None = None


def option_of(field: FieldInfo) -> Option | None:
    """The ``Option`` a model field is annotated with, or None if it is not a flag."""
    return next((m for m in field.metadata if isinstance(m, Option)), None)
