"""Parse the original tool's experiment command strings into structured Experiments.

``python3 DRL_battery.py --environment Eplus-5zone-hot-discrete-v1 --episodes 2 --algorithm DQN``
is what users of the original ``cloud_manager.py`` wrote. The strings are parsed, never run: only
the trainer program is accepted, only its known flags, and any shell syntax is refused with a
message that names the offending token.
"""

from __future__ import annotations

import shlex
from typing import Any

from pydantic import ValidationError

from sinergym_cloud.contracts import Experiment, summarise
from sinergym_cloud.errors import InvalidInput
from sinergym_cloud.inputs import flags

# Characters that only mean something to a shell. None of them can occur in a valid experiment.
FORBIDDEN = {
    ";": "command separator ';'",
    "&": "'&' (background or '&&')",
    "|": "pipe '|'",
    "`": "backtick command substitution",
    "$": "'$' expansion",
    "<": "redirection '<'",
    ">": "redirection '>'",
    "(": "'(' (subshell)",
    ")": "')' (subshell)",
    "\n": "newline",
    "\r": "carriage return",
    "\\": "backslash escape",
    "*": "glob '*'",
    "?": "glob '?'",
    "~": "'~' expansion",
    "{": "brace expansion '{'",
    "}": "brace expansion '}'",
    "#": "comment '#'",
    "\x00": "NUL byte",
}
PROGRAMS = {"python", "python3", "python3.12"}
SCRIPT = "DRL_battery.py"
MAX_COMMAND = 4096


class LegacyCommandError(InvalidInput):
    """A command string that is not a valid experiment; the message says which token and why."""


def _token_at(command: str, position: int) -> str:
    start = command.rfind(" ", 0, position) + 1
    end = command.find(" ", position)
    return command[start : end if end != -1 else len(command)]


def _program_end(tokens: list[str]) -> int:
    """How many leading tokens name the program; raises if it is not the trainer."""
    if not tokens:
        raise LegacyCommandError("empty experiment command")
    i = 0
    if tokens[0] in PROGRAMS:
        i = 1
        if len(tokens) > 2 and tokens[1] == "-m" and tokens[2] == "trainer":
            return 3
    if i < len(tokens) and tokens[i].rsplit("/", 1)[-1] == SCRIPT:
        return i + 1
    bad = tokens[i] if i < len(tokens) else tokens[0]
    raise LegacyCommandError(
        f"unexpected program {bad!r}: an experiment command must run {SCRIPT} "
        f"(for example 'python3 {SCRIPT} --environment ...')"
    )


def _convert(flag: flags.Flag, raw: str) -> Any:
    try:
        if flag.kind == "int":
            return int(raw)
        if flag.kind == "float":
            return float(raw)
    except ValueError:
        raise LegacyCommandError(f"{flag.long} expects a number, got {raw!r}") from None
    return raw


def parse_options(tokens: list[str]) -> dict[str, Any]:  # noqa: PLR0912 - one branch per kind of token
    """Turn flag tokens into a dict of Experiment fields (hyperparameters nested)."""
    table = flags.by_spelling()
    values: dict[str, Any] = {}
    hyper: dict[str, Any] = {}
    seen: set[str] = set()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name, eq, inline = token.partition("=")
        flag = table.get(name) if token.startswith("-") else None
        if flag is None:
            if token.startswith("-"):
                raise LegacyCommandError(f"unknown flag {name!r}")
            raise LegacyCommandError(f"unexpected argument {token!r} (every value must follow its flag)")
        if flag.dest in seen:
            raise LegacyCommandError(f"flag {flag.long} given twice")
        seen.add(flag.dest)
        i += 1
        if flag.kind == "bool":
            if eq:
                raise LegacyCommandError(f"{flag.long} is a switch and takes no value")
            value: Any = True
        elif flag.kind == "runperiod":
            raw = inline.split(",") if eq else tokens[i : i + 6]
            if not eq:
                i += 6
            if len(raw) != 6:
                raise LegacyCommandError(f"{flag.long} expects six numbers: D M Y D M Y")
            try:
                value = tuple(int(x) for x in raw)
            except ValueError:
                raise LegacyCommandError(f"{flag.long} expects six numbers, got {' '.join(raw)!r}") from None
        else:
            if eq:
                raw_value = inline
            elif i < len(tokens) and not (tokens[i].startswith("-") and tokens[i] in table):
                raw_value = tokens[i]
                i += 1
            else:
                raise LegacyCommandError(f"{flag.long} expects a value")
            value = _convert(flag, raw_value)
        if flag.algorithms is not None:
            hyper[flag.dest] = value
        else:
            values[flag.dest] = value
    if hyper:
        values["hyperparameters"] = hyper
    return values


def parse_command(command: str) -> tuple[Experiment, str | None]:
    """Parse one legacy command string. Returns the Experiment and the --group_name, if any."""
    if len(command) > MAX_COMMAND:
        raise LegacyCommandError(f"command is {len(command)} characters; the limit is {MAX_COMMAND}")
    for position, char in enumerate(command):
        if char in FORBIDDEN:
            token = _token_at(command, position)
            raise LegacyCommandError(f"{FORBIDDEN[char]} is not allowed in an experiment command (in {token!r})")
    try:
        tokens = shlex.split(command)
    except ValueError as exc:
        raise LegacyCommandError(f"cannot split command: {exc}") from None
    start = _program_end(tokens)
    values = parse_options(tokens[start:])
    group = values.pop("group_name", None)
    values.pop("auto_delete", None)
    if "environment" not in values:
        raise LegacyCommandError("--environment is required")
    try:
        return Experiment.model_validate(values), group
    except ValidationError as exc:
        raise LegacyCommandError(summarise(exc)) from None


def render_command(experiment: Experiment) -> str:
    """The legacy command string for an Experiment (for display; parse_command inverts it)."""
    parts = ["python3", SCRIPT]
    data = experiment.model_dump(exclude_defaults=True)
    hyper = data.pop("hyperparameters", {}) or {}
    table = {f.dest: f for f in flags.ALL_FLAGS}
    for dest, value in list(data.items()) + list(hyper.items()):
        if value is None or dest not in table:  # schema-2 fields (a Sinergym config's) have no flag
            continue
        flag = table[dest]
        if flag.kind == "bool":
            if value:
                parts.append(flag.long)
        elif flag.kind == "runperiod":
            parts.append(flag.long)
            parts.extend(str(v) for v in value)
        else:
            parts.extend([flag.long, str(value)])
    return shlex.join(parts)
