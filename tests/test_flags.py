"""Each option is declared once: the flag table is the contract's fields, and nothing else."""

from __future__ import annotations

import pytest

from sinergym_cloud.contracts import AlgorithmParameters, Experiment, Hyperparameters, SharedParameters
from sinergym_cloud.inputs import flags
from sinergym_cloud.options import option_of
from trainer import cli as trainer_cli


def test_every_experiment_field_is_a_flag_or_says_why_not() -> None:
    fields = set(Experiment.model_fields)
    flagged = {f.dest for f in flags.RUN_FLAGS} - {f.dest for f in flags.COMPATIBILITY_FLAGS}
    assert flagged | set(flags.NOT_FLAGS) == fields
    assert not flagged & set(flags.NOT_FLAGS)
    assert all(option_of(Experiment.model_fields[name]) is None for name in flags.NOT_FLAGS)


def test_every_hyperparameter_is_a_flag_and_every_flag_a_field() -> None:
    assert {f.dest for f in flags.HYPERPARAMETER_FLAGS} == set(Hyperparameters.model_fields)
    compatibility = {f.dest for f in flags.COMPATIBILITY_FLAGS}
    assert not compatibility & set(Experiment.model_fields), "a compatibility flag is not an experiment field"
    for flag in flags.ALL_FLAGS:
        if flag.dest in compatibility:
            continue
        model = Hyperparameters if flag.algorithms is not None else Experiment
        assert flag.help == model.model_fields[flag.dest].description, flag.long


def test_spellings_are_unique_and_the_original_tools() -> None:
    spellings = [s for f in flags.ALL_FLAGS for s in (f.long, f.short) if s]
    assert len(spellings) == len(set(spellings))
    table = flags.by_spelling()
    for long, short in (("--environment", "-env"), ("--episodes", "-ep"), ("--seed", "-sd"), ("--gamma", "-g")):
        assert table[long] is table[short]
    assert table["--n-envs"].dest == "n_envs" and table["--runperiod"].kind == "runperiod"
    assert table["--normalization"].kind == "bool" and table["--learning_rate"].kind == "float"


def test_the_hyperparameters_the_flags_and_a_sinergym_config_share_are_declared_once() -> None:
    shared = set(Hyperparameters.model_fields) & set(AlgorithmParameters.model_fields)
    assert len(shared) >= 20
    declared_twice = shared & set(Hyperparameters.__annotations__) & set(AlgorithmParameters.__annotations__)
    # ent_coef ("auto") and train_freq ((n, "episode")) take more in a config: declared twice, on purpose.
    assert declared_twice == {"ent_coef", "train_freq"}
    assert shared - declared_twice == set(SharedParameters.model_fields)


@pytest.mark.parametrize("flag", flags.ALL_FLAGS, ids=lambda f: f.long)
def test_the_trainer_help_shows_each_fields_description(flag: flags.Flag) -> None:
    text = " ".join(trainer_cli.build_parser().format_help().split())
    assert flag.long in text
    assert " ".join(flag.help.split())[:40] in text
