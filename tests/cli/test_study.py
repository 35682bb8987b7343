"""prunetune.cli.study: search, pareto and export check their own flags before any work."""

from __future__ import annotations

from prunetune.cli import main


def test_search_refuses_retrain_epochs_without_export(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--retrain-epochs", "2"]) == 2
    assert "--retrain-epochs fine-tunes the model --export writes" in capsys.readouterr().err
    assert not (tmp_path / "mlruns").exists()  # nothing written


def test_pareto_of_a_storage_without_studies_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["pareto", "--storage", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
