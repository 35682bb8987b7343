from __future__ import annotations

import dataclasses
import json
import re

import pytest

from prunetune.config import (
    CONFIG_VERSION,
    FLAT,
    PARTS,
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
    Task,
)
from prunetune.errors import ConfigError


def test_defaults_are_valid_and_name_the_study():
    cfg = SearchSettings()
    assert cfg.study_name == "mnist_net-mnist5k"
    assert cfg.stores.storage_url == "sqlite:///mlruns/optuna.db"
    assert cfg.selection.objectives == ["accuracy", "flops", "fps"]


def test_yaml_then_flags_precedence(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("trials: 7\nsampler: nsga2\nbits: [32, 8]\n")
    cfg = SearchSettings.from_sources(f, {"trials": 9, "sampler": None})
    assert cfg.budget.trials == 9 and cfg.plan.sampler == "nsga2" and cfg.space_spec.bits == [32, 8]


@pytest.mark.parametrize(
    "text, message",
    [
        ("trails: 3\n", "unknown config key(s) trails"),
        ("cls: 3\n", "unknown config key(s) cls"),  # not the classmethod's own argument
        ("trials: three\n", "trials must be of type int"),
        ("trials: 0\n", "trials must be >= 1"),
        ("trials: -2\n", "trials must be >= 1"),
        ("sampler: annealing\n", "unknown sampler 'annealing'"),
        ("ratio_max: 1.0\n", "ratio_max < 1"),
        ("bits: 8\n", "bits must be a list"),
        ("objectives: []\n", "at least one objective"),
        ("- a\n- b\n", "must hold a mapping"),
        ("trials: [\n", "not valid YAML"),
        ("1: 2\ntrails: 3\n", "unknown config key(s) '1', trails"),
        ("trials: 2020-02-30\n", "holds a value YAML cannot build"),
        ("lr: .nan\n", "lr must be a finite number > 0"),
        ("max_flops: -.inf\n", "max_flops must be a finite number > 0"),
        ("seed: 4294967296\n", "seed must be in [0, 2**32)"),
        ('study: "it\'s"\n', 'study name "it\'s" is not allowed'),
        ("objectives: [accuracy, flops, accuracy]\n", "objectives must not repeat"),
    ],
)
def test_bad_config_files_are_clear_errors(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        SearchSettings.from_sources(f)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        SearchSettings.from_sources(tmp_path / "nope.yaml")


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="trials must be of type int"):
        SearchSettings.from_flat(trials=True)


def test_binary_config_file(tmp_path):
    f = tmp_path / "bin.yaml"
    f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        SearchSettings.from_sources(f)


def _alias_bomb(levels: int, key: str = "study") -> str:
    """`key:` holding a billion-laughs list: 9 ** levels strings from 9 * (levels - 1) + 1 aliases,
    every anchor defined inside the value (no other key)."""
    parts = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    parts += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return f"{key}: [{', '.join(parts)}, *l{levels - 1}]\n"


def _timed_error(path, text: str) -> tuple[str, float]:
    import time

    path.write_text(text)
    t = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        SearchSettings.from_sources(path)
    return str(info.value), time.perf_counter() - t


@pytest.mark.parametrize(
    "text, message",
    [
        (_alias_bomb(9), "study must be of type str, got list ["),
        (_alias_bomb(9, "bits"), "bits must be of type int, got list ["),
        (_alias_bomb(13), "uses more than 100 YAML aliases"),
        ("study: " + "[" * 200 + "]" * 200 + "\n", "is nested deeper than 32 levels"),
        ("bits: [" + ", ".join(["8"] * 700_000) + "]\n", "bytes; at most 262,144 are read"),
        (
            "objectives: [" + ", ".join(["flops"] * 30_000) + "]\n",
            "objectives must not repeat a value, got 'flops'",
        ),
        (
            "bits: [" + ", ".join(str(b) for b in [32, 8, 6, 4] * 15_000) + "]\n",
            "bits must not repeat a value",
        ),
        ("sampler: " + "x" * 200_000 + "\n", "unknown sampler 'xxxx"),
    ],
    ids=[
        "alias-bomb",
        "alias-bomb-bits",
        "many-aliases",
        "deep",
        "3MB-bits",
        "objectives",
        "bits",
        "long-string",
    ],
)
def test_config_loading_is_bounded(tmp_path, text, message):
    """An alias bomb under `study:` used to reach 2.9 GB (the type check rendered the value into its
    message); a 3 MB `bits:` or 9 MB `objectives:` list hung for minutes (quadratic duplicate
    check). Each fails fast now, naming the key, never the whole value."""
    error, seconds = _timed_error(tmp_path / "c.yaml", text)
    assert message in error, error[:300]
    assert len(error) < 400 and seconds < 2.0, (len(error), seconds)


def test_a_long_valid_list_is_checked_in_linear_time():
    import time

    t = time.perf_counter()
    with pytest.raises(ConfigError, match="must not repeat"):
        SearchSettings.from_flat(objectives=["accuracy", "flops", "fps"] * 300_000)
    assert time.perf_counter() - t < 2.0


# -- settings in parts: one place of checks, the stored config versioned -------------------------

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
    assert cfg.flat() == OLD_STORED  # nothing lost or renamed on the way


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


def test_parts_cannot_be_changed_once_checked():
    cfg = SearchSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.budget.trials = 0  # would skip the check of trials >= 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.budget = Budget(trials=3)


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


def test_the_python_api_composes_the_parts_it_takes():
    from prunetune.search.api_settings import search_config

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
