"""The recovery fine-tune before export (issue 22): `search --export DIR --retrain-epochs N` and the
Python API's `SearchRun.export(..., retrain=N)`; the card reports accuracy before and after."""

from __future__ import annotations

import contextlib
import json

import pytest

from prunetune.cli import main
from tests.helpers import search_args
from tests.search.test_python_api import evaluate, searched, trained  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_search_export_with_a_recovery_fine_tune_reports_before_and_after(isolated, capsys):
    args = search_args(
        "rec",
        2,
        "--objectives",
        "accuracy,macs",
        "--bits",
        "32",
        "--export",
        "out",
        "--retrain-epochs",
        "1",
    )
    assert main(args) == 0, capsys.readouterr().err
    card = json.loads((isolated / "out" / "card.json").read_text())
    assert card["retrain"]["epochs"] == 1 and card["retrain"]["val_accuracy_before"] is not None
    assert "before" in (isolated / "out" / "card.md").read_text()


def test_retrain_epochs_without_export_or_negative_is_one_line_exit_2(isolated, capsys):
    assert main(search_args("rec", 2, "--retrain-epochs", "1")) == 2
    assert "--export" in capsys.readouterr().err
    assert main(search_args("rec", 2, "--export", "o", "--retrain-epochs", "-1")) == 2
    assert ">= 0" in capsys.readouterr().err
    assert not (isolated / "mlruns").exists()


@pytest.mark.slow
def test_python_api_export_with_a_recovery_fine_tune(searched, tmp_path):  # noqa: F811
    folder, run = searched
    with contextlib.chdir(folder):
        card = run.export(run.front[-1], tmp_path / "out", fmt="onnx", register=False, retrain=2)
    r = card.data.retrain
    assert r["epochs"] == 2 and r["val_accuracy_before"] == run.front[-1].metrics["accuracy"]
    assert 0.0 <= r["val_accuracy"] <= 1.0 and card.data.verification.outputs_match
