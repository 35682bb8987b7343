"""SearchSettings: the flat keys mapped onto the parts, the stored config versioned (old flat
studies still load), the base model's cache key from the Task and BaseRecipe parts only."""

from __future__ import annotations

import dataclasses
import json

import pytest

from prunetune.config import (
    CONFIG_VERSION,
    FLAT,
    PARTS,
    BaseRecipe,
    Runner,
    SearchSettings,
    Task,
)
from prunetune.errors import ConfigError


# the config a study stored before settings came in parts (the flat config class's as_dict() of
# prunetune at 655aff2, masked as stored): flat keys, no version
OLD_STORED = {
    "model": "tiny_cnn", "dataset": "digits", "data_root": None, "checkpoint": None,
    "base_epochs": 5, "base_lr": 0.01, "base_batch_size": 64, "base_seed": 3, "seed": 0,
    "study": "old-study", "storage": "postgresql://u:***@db/optuna", "tracking_uri": None,
    "trials": 12, "timeout": None, "strategy": "search", "targets": None, "candidates": 8,
    "proxy_steps": None, "screen": 2, "parametrization": "ratios", "sampler": "nsga2",
    "objectives": ["accuracy", "macs"], "min_accuracy": None, "max_flops": None, "space": None,
    "granularity": "layer", "ratio_min": 0.0, "ratio_max": 0.95, "ratio_step": 0.05,
    "round_to": 1, "bits": [32, 8], "importance": ["l2"], "subset": 2500, "epochs": 3,
    "lr": 0.005, "batch_size": 64, "distill": 0.0, "device": "auto", "runtime": "torch",
    "threads": 1, "train_threads": 2, "fps_repeats": 11, "backend": "ray", "workers": 3,
    "cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "address": "auto", "keep_all_weights": True,
    "select": "max fps where accuracy>=0.9", "max_drop": 0.01,
}  # fmt: skip


def test_an_old_flat_stored_config_still_loads_into_the_parts():
    cfg = SearchSettings.from_stored(OLD_STORED)
    assert cfg.task == Task(model="tiny_cnn", dataset="digits")
    assert cfg.base == BaseRecipe(epochs=5, lr=0.01, batch_size=64, seed=3)
    assert cfg.finetune.lr == 0.005 and cfg.plan.screening and cfg.plan.sampler == "nsga2"
    assert cfg.runner == Runner(backend="ray", workers=3, address="auto")
    assert cfg.stores.keep_all_weights and cfg.study_name == "old-study"
    assert cfg.measurement.train_threads == 2 and cfg.selection.objectives == ["accuracy", "macs"]
    # nothing lost or renamed on the way; keys added since take their defaults
    assert cfg.flat() == OLD_STORED | {"lr_scaling": 1.5}


def test_stored_settings_are_versioned_and_round_trip_through_json():
    cfg = SearchSettings.from_flat(
        model="tiny_cnn", base_lr=0.02, targets=[0.5, 0.2], train_threads="3", max_flops=1e6
    )
    stored = json.loads(json.dumps(cfg.to_stored()))  # as a study's user attr keeps it
    assert stored["config_version"] == CONFIG_VERSION and stored["base_lr"] == 0.02
    assert SearchSettings.from_stored(stored) == cfg
    assert cfg.measurement.train_threads == 3  # a flag's "3" is kept as a number


def test_a_config_stored_by_a_newer_prunetune_is_one_clear_line():
    with pytest.raises(ConfigError, match=r"of version 3; this prunetune reads versions 1 to 2"):
        SearchSettings.from_stored({**OLD_STORED, "config_version": 3})


def test_every_flat_key_maps_onto_one_part_field():
    fields = {(part, f.name) for part, cls in PARTS.items() for f in dataclasses.fields(cls)}
    assert sorted(FLAT.values()) == sorted(fields)  # every field reachable by exactly one key
    assert FLAT["base_lr"] == ("base", "lr") and FLAT["lr"] == ("finetune", "lr")


def test_the_base_model_cache_key_comes_from_the_task_and_base_recipe_only():
    """Settings that differ in everything but the Task and the BaseRecipe find the same cached
    base; another base recipe finds another one."""
    from prunetune.models.checkpoint import cache_key
    from prunetune.search.objective import base_recipe

    def key(cfg: SearchSettings) -> str:
        return cache_key(cfg.task.model, cfg.task.dataset, cfg.base.seed, base_recipe(cfg.base))

    one = SearchSettings.from_flat(model="tiny_cnn", dataset="digits", base_lr=0.01)
    other = SearchSettings.from_flat(
        model="tiny_cnn", dataset="digits", base_lr=0.01, lr=0.5, epochs=0, seed=9, trials=2,
        strategy="search", sampler="random", device="cpu", threads=2, bits=[32],
    )  # fmt: skip
    assert key(one) == key(other)
    assert key(one) != key(SearchSettings.from_flat(model="tiny_cnn", dataset="digits"))
