from __future__ import annotations

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
])
def test_bad_config_files_are_clear_errors(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=rf"{message.replace('(', '[(]').replace(')', '[)]')}"):
        SearchConfig.from_sources(f)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        SearchConfig.from_sources(tmp_path / "nope.yaml")


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="trials must be of type int"):
        SearchConfig(trials=True)
