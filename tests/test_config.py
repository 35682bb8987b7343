from __future__ import annotations

import re

import pytest

from prunetune.config import (
    SearchSettings,
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
    # bounded, not timed: the quadratic checks took minutes; 10 s leaves room for a loaded machine
    assert len(error) < 400 and seconds < 10.0, (len(error), seconds)


def test_a_long_valid_list_is_checked_in_linear_time():
    """CPU seconds, not wall time (a loaded CI machine took 2.6 s of wall time for ~0.3 s of
    work): a quadratic check of 900,000 items would take hours either way."""
    import time

    t = time.process_time()
    with pytest.raises(ConfigError, match="must not repeat"):
        SearchSettings.from_flat(objectives=["accuracy", "flops", "fps"] * 300_000)
    assert time.process_time() - t < 10.0
