"""prunetune.config.checks: each part checks itself when built, the rules joining parts are
checked when SearchSettings is built; every error is one line naming the user's key."""

from __future__ import annotations

import re

import pytest

from prunetune.config import (
    BaseRecipe,
    Budget,
    FinetuneRecipe,
    Measurement,
    Runner,
    SearchPlan,
    SearchSettings,
    Selection,
    SpaceSpec,
    Stores,
    check_targets,
    check_train_threads,
)
from prunetune.errors import ConfigError


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: BaseRecipe(lr=0.0), "base_lr must be a finite number > 0, got 0.0"),
        (lambda: BaseRecipe(seed=-1), "base_seed must be in [0, 2**32), got -1"),
        (lambda: BaseRecipe(epochs="5"), "base_epochs must be of type int, got str '5'"),
        (lambda: FinetuneRecipe(distill=1.5), "distill must be in [0, 1], got 1.5"),
        (lambda: Budget(timeout=-1.0), "timeout must be a positive number of seconds"),
        (lambda: Runner(workers=0), "workers must be >= 1, got 0"),
        (lambda: Runner(backend="dask"), "unknown backend 'dask'; known: optuna, ray"),
        (lambda: Measurement(device="gpu"), "device must be auto, cpu, cuda or cuda:N"),
        (lambda: Measurement(train_threads=0), "train_threads must be auto or a whole number"),
        (lambda: SpaceSpec(bits=[32, 9]), "bit-widths [9] not allowed"),
        (lambda: Selection(max_drop=2.0), "max_drop is a fraction of accuracy in [0, 1]"),
        (lambda: Stores(study="a/b"), "study name"),
        (
            lambda: SearchPlan(strategy="uniform", targets=[0.5]),
            "--targets sets the targets strategy's cost targets: use it with --strategy targets",
        ),
        (
            lambda: SearchPlan(screen=2),
            "--screen screens the per-group search's proposals: use it with --strategy search",
        ),
        (
            lambda: SearchSettings(
                measurement=Measurement(device="cpu"),
                runner=Runner(backend="ray", gpus_per_trial=1),
            ),
            "with the ray backend, --gpus-per-trial decides a trial's device (cuda for 1)",
        ),
    ],
)
def test_each_part_checks_itself_with_one_line(build, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        build()
    assert "\n" not in str(info.value)


def test_targets_are_distinct_fractions_lightest_last():
    assert check_targets([0.1, 0.5]) == [0.5, 0.1]
    for bad, message in (([], "at least one"), ([0.5, 1.0], "in (0, 1)"), ([0.2, 0.2], "repeat")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_targets(bad)


def test_train_threads_are_auto_or_a_count_also_as_a_flag_string():
    assert check_train_threads("auto") == "auto" and check_train_threads(" 4 ") == 4
    for bad in (0, "four", True, 2.5):
        with pytest.raises(ConfigError, match="train_threads must be auto or a whole number"):
            check_train_threads(bad)
