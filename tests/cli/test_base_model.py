"""prunetune.cli.base_model: train and sensitivity check their parts before any data is loaded;
train's errors name train's own flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunetune.cli import main


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr=0"], "--lr must be a finite number > 0, got 0.0"),
        (["--batch-size=0"], "--batch-size must be >= 1, got 0"),
        (["--seed=-1"], "--seed must be in [0, 2**32), got -1"),
        (["--device=gpu"], "device must be auto, cpu, cuda or cuda:N"),
    ],
)
def test_train_names_its_own_flags(capsys, flags, message):
    assert main(["train", "--model", "tiny_cnn", "--dataset", "digits", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "training base" not in err


def test_sensitivity_checks_its_scan_and_its_recipe_first(capsys):
    assert main(["sensitivity", "--model", "tiny_cnn", "--ratios", "0.5,1.0"]) == 2
    assert "ratios must be in [0, 1), got 1.0" in capsys.readouterr().err
    assert main(["sensitivity", "--model", "tiny_cnn", "--base-lr", "-1"]) == 2
    assert "base_lr must be a finite number > 0" in capsys.readouterr().err


def test_a_base_trained_with_train_is_the_one_search_finds(isolated, monkeypatch, capsys):
    """One base recipe: `prunetune train --lr 0.01` caches the base that `prunetune search
    --base-lr 0.01` (same recipe) loads; search used to look under its own lr 1e-3 recipe."""
    home = isolated / "home"
    monkeypatch.setenv("PRUNETUNE_HOME", str(home))
    recipe = ["--model", "tiny_cnn", "--dataset", "digits"]
    assert main(["train", *recipe, "--epochs", "1", "--lr", "0.01", "--train-threads", "1"]) == 0
    checkpoint = capsys.readouterr().out.split("checkpoint: ")[1].strip()
    cached = {p: p.stat().st_mtime_ns for p in home.rglob("*.pt")}
    assert list(cached) == [Path(checkpoint)]
    search = [*recipe, "--base-epochs", "1", "--base-lr", "0.01", "--trials", "1", "--threads", "1"]
    assert main(["search", *search, "--epochs", "1", "--subset", "100", "--fps-repeats", "2"]) == 0
    assert {p: p.stat().st_mtime_ns for p in home.rglob("*.pt")} == cached  # loaded, not retrained
    assert "training base" not in capsys.readouterr().err
