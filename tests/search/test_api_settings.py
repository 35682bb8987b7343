"""prunetune.search.api_settings: the Python API composes the parts of the settings it takes; the
others (the caller's loop) and options needing prunetune's own data are one clear line."""

from __future__ import annotations

import pytest

from prunetune.config import Task
from prunetune.errors import ConfigError
from prunetune.search.api_settings import objective_names, search_config


def test_the_python_api_composes_the_parts_it_takes():
    cfg = search_config(
        "Net",
        objectives=["accuracy", "flops"],
        trials=4,
        study_name="api",
        storage=None,
        tracking_uri=None,
        backend="optuna",
        options={"sampler": "random", "ratio_max": 0.5, "keep_all_weights": True},
    )
    assert cfg.task == Task(model="Net", dataset="user") and cfg.budget.trials == 4
    assert cfg.plan.sampler == "random" and cfg.space_spec.ratio_max == 0.5
    assert cfg.stores.keep_all_weights and cfg.measurement.device == "cpu"
    for refused in ("lr", "base_epochs", "model", "device"):  # the caller's loop's, or fixed
        with pytest.raises(ConfigError, match=f"run_search does not take {refused}:"):
            search_config(
                "Net",
                objectives=["accuracy"],
                trials=1,
                study_name=None,
                storage=None,
                tracking_uri=None,
                backend="optuna",
                options={refused: 1},
            )


def test_objectives_are_ordered_names_or_a_mapping_to_directions():
    assert objective_names(["accuracy", "fps"]) == ["accuracy", "fps"]
    assert objective_names({"map": "maximize"}) == ["map:maximize"]
    with pytest.raises(ConfigError, match="not a set"):
        objective_names({"accuracy", "flops"})
    with pytest.raises(ConfigError, match="not one string"):
        objective_names("accuracy")
