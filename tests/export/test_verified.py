"""A verified export of one trial (prunetune.export.verified.write_verified) of an in-memory study:
the files written, the file reloaded in its runtime and checked against PyTorch, timed next to the
base, and a warning when its test accuracy is not the one recorded. (Exports of real searches:
tests/export/test_study.py, tests/search/test_python_api.py.)"""

from __future__ import annotations

import pytest
import torch

from prunetune.compress import CompressionConfig, compress
from prunetune.export.assemble import Origin
from prunetune.export.files import load_compressed
from prunetune.export.verified import write_verified
from prunetune.models import build_for
from prunetune.search.results import summarize
from tests.export.builders import export_inputs
from tests.search.studies import add, new_study, record

pytestmark = pytest.mark.usefixtures("one_torch_thread")
X = torch.zeros(1, 1, 8, 8)
BASE_REF = {"model": "tiny_cnn", "input_shape": [1, 8, 8], "num_classes": 10}


def _export(tmp_path, recorded_test: float, log) -> tuple:
    torch.manual_seed(0)
    base = build_for("tiny_cnn", (1, 8, 8), 10).eval()
    config = CompressionConfig(ratios={"0": 0.5})
    model = compress(base, config, X)
    xs = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = model.eval()(xs).argmax(1)  # the compressed model is right on every one
    study = new_study()
    add(study, record(0))
    study.set_user_attr("test_accuracy", {"0": recorded_test})
    result = summarize(study)
    inputs = export_inputs(
        base,
        xs,
        test_set=torch.utils.data.TensorDataset(xs, labels),
        load=load_compressed,
        torch_test=1.0,
    )
    header = {"config": config.as_dict(), "base": BASE_REF}
    out = tmp_path / "out"
    out.mkdir()
    card = write_verified(
        model,
        header,
        result.record(0),
        inputs,
        out,
        fmt="onnx",
        int8=False,
        fps_repeats=3,
        origin=Origin("s", "sqlite:///x.db", "knee", "torch", result),
        log=log,
    )
    return card, out


def test_the_file_is_written_reloaded_verified_and_timed(tmp_path):
    said: list[str] = []
    card, out = _export(tmp_path, recorded_test=1.0, log=said.append)
    assert sorted(p.name for p in out.iterdir()) == ["compressed.pt", "model.onnx"]
    d = card.data
    assert d.verification.outputs_match and d.compressed.test_accuracy == 1.0
    assert d.verification.accuracy_delta == 0.0 and d.compressed.test_accuracy_torch == 1.0
    assert d.compressed.macs < d.base.macs and d.compressed.fps > 0 and d.base.fps > 0
    assert not [line for line in said if line.startswith("warning")]
    reloaded = load_compressed(out)
    with torch.no_grad():
        assert reloaded(X).shape == (1, 10)


def test_a_test_accuracy_unlike_the_recorded_one_is_warned_about(tmp_path):
    said: list[str] = []
    card, _ = _export(tmp_path, recorded_test=0.5, log=said.append)
    assert card.data.verification.accuracy_delta == pytest.approx(0.5)
    assert any("+50.00 points from the 50.00% recorded during the search" in s for s in said)
