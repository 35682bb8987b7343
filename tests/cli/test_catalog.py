"""prunetune.cli.catalog: models, datasets, info and space print what they list (no training)."""

from __future__ import annotations

import json

from prunetune.cli import main


def test_models_and_datasets_list_their_registries(capsys):
    assert main(["models"]) == 0 and "tiny_cnn" in capsys.readouterr().out
    assert main(["datasets"]) == 0 and "digits" in capsys.readouterr().out


def test_info_as_json_counts_macs_and_groups(capsys):
    assert main(["info", "--model", "tiny_cnn", "--input-size", "1,8,8", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["flops"] == 2 * data["macs"] > 0 and data["groups"] and data["layers"]


def test_space_uses_the_settings_defaults_and_the_flags_given(capsys):
    assert main(["space", "--model", "tiny_cnn", "--input-size", "1,8,8", "--bits", "32,8"]) == 0
    text = capsys.readouterr().out
    assert "bits:" in text and "- 8" in text and "- 4" not in text
