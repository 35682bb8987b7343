"""card.json's data assembled (prunetune.export.assemble.card_data) from what an export measured and
where the trial comes from: the base's and the compressed model's figures, the search's records
(test accuracy from the study, kept once), the accuracy delta, masked provenance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from prunetune.compress import CompressionConfig, compress
from prunetune.export.assemble import Measured, Origin, card_data
from prunetune.export.card import Verification
from prunetune.measure import count_macs
from prunetune.runtimes import make_runner, measure_fps
from prunetune.search.results import summarize
from tests.export.builders import export_inputs
from tests.search.studies import add, new_study, record

pytestmark = pytest.mark.usefixtures("one_torch_thread")
X = torch.zeros(1, 1, 8, 8)


@pytest.fixture
def parts(tmp_path):
    """(record, inputs, plain, config, measured, origin) of trial 0, exported as ONNX."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(288, 3)).eval()
    config = CompressionConfig(ratios={"0": 0.5})
    plain = compress(base, config, X).eval()
    study = new_study()
    add(study, record(0, accuracy=0.85, size_bytes=1234))
    study.set_user_attr("test_accuracy", {"0": 0.79})
    result = summarize(study)
    rec = result.record(0)
    inputs = export_inputs(
        base, X, load=lambda path: plain, base_metrics={"test_accuracy": 0.9, "val_accuracy": 0.91}
    )
    run, base_run = make_runner(plain, "torch", X), make_runner(base, "torch", X)
    timings = measure_fps({"compressed": run, "base": base_run}, X, repeats=3, sample_s=0.002)
    (tmp_path / "model.onnx").write_bytes(b"x" * 100)
    measured = Measured(
        file=tmp_path / "model.onnx",
        base_bytes=400,
        export_seconds=1.5,
        run=run,
        base_run=base_run,
        timings=timings,
        repeats=3,
        verification=Verification(1, "inputs", 0.0, 1e-4, 1.0, 1.0, True),
        test_accuracy=0.8,
        test_accuracy_torch=0.81,
    )
    origin = Origin("s", "postgresql://u:pw1234@h/db", "knee", "torch", result)
    return rec, inputs, plain, config, measured, origin


def test_the_card_has_both_models_figures_and_the_searchs_records(parts):
    rec, inputs, plain, config, measured, origin = parts
    card = card_data(
        rec, inputs, plain, config, measured, fmt="onnx", int8=False, origin=origin, retrain=None
    )
    assert (card.study, card.trial, card.file, card.selection) == ("s", 0, "model.onnx", "knee")
    assert card.base.macs == count_macs(inputs.base, X) and card.base.file_bytes == 400
    assert card.compressed.macs == count_macs(plain, X) < card.base.macs
    assert card.compressed.file_bytes == 100 and card.compressed.packed_size_bytes == 1234
    assert card.recorded.test_accuracy == 0.79  # the study's, stored once
    assert card.recorded.base_test_accuracy is None and card.base.test_accuracy == 0.9
    assert card.compressed.val_accuracy == 0.85
    assert card.verification.accuracy_delta == pytest.approx(0.8 - 0.79)
    assert card.provenance.storage == "postgresql://u:***@h/db"
    assert card.provenance.trial_weights == str(Path(rec.weights).resolve())
    assert [(r.layer, r.kept_channels) for r in card.layers] == [("0", 4), ("3", 3)]


def test_after_a_recovery_fine_tune_its_accuracy_is_shown_and_no_delta(parts):
    rec, inputs, plain, config, measured, origin = parts
    retrain = {"epochs": 1, "val_accuracy": 0.88, "val_accuracy_before": 0.85}
    card = card_data(
        rec, inputs, plain, config, measured, fmt="onnx", int8=False, origin=origin, retrain=retrain
    )
    assert card.compressed.val_accuracy == 0.88 and card.verification.accuracy_delta is None
    assert card.retrain == retrain
