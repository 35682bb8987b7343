from __future__ import annotations

import re

import pytest

from prunetune.config import SearchConfig
from prunetune.errors import ConfigError


def test_defaults_are_valid_and_name_the_study():
    cfg = SearchConfig()
    assert cfg.study_name == "mnist_net-mnist5k"
    assert cfg.storage_url == "sqlite:///mlruns/optuna.db"
    assert cfg.objectives == ["accuracy", "flops", "fps"]


def test_yaml_then_flags_precedence(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("trials: 7\nsampler: nsga2\nbits: [32, 8]\n")
    cfg = SearchConfig.from_sources(f, {"trials": 9, "sampler": None})
    assert cfg.trials == 9 and cfg.sampler == "nsga2" and cfg.bits == [32, 8]


@pytest.mark.parametrize("text, message", [
    ("trails: 3\n", "unknown config key(s) trails"),
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
    ("study: \"it's\"\n", "study name \"it's\" is not allowed"),
    ("objectives: [accuracy, flops, accuracy]\n", "objectives must not repeat"),
])
def test_bad_config_files_are_clear_errors(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        SearchConfig.from_sources(f)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        SearchConfig.from_sources(tmp_path / "nope.yaml")


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="trials must be of type int"):
        SearchConfig(trials=True)


def test_binary_config_file(tmp_path):
    f = tmp_path / "bin.yaml"
    f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        SearchConfig.from_sources(f)
