"""Base-model checkpoints (prunetune.models.checkpoint): atomic save, read back with their meta,
plain state_dicts, and one-line errors for files that are none of these or of another model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.errors import CheckpointError
from prunetune.models.checkpoint import (
    FORMAT,
    build_for,
    load_into,
    read_checkpoint,
    save_checkpoint,
)

META = {"model": "tiny_cnn", "metrics": {"val_accuracy": 0.9, "test_accuracy": 0.88}}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return build_for("tiny_cnn", (1, 8, 8), 3)


def test_a_saved_checkpoint_reads_back_with_its_meta(tmp_path):
    model = _net()
    path = save_checkpoint(tmp_path / "sub" / "base.pt", model, META)
    assert [p.name for p in path.parent.iterdir()] == ["base.pt"]  # no temporary file left
    meta, state = read_checkpoint(path)
    assert meta == META
    again = load_into(build_for("tiny_cnn", (1, 8, 8), 3), state, str(path))
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(again(x), model.eval()(x)) and not again.training


def test_a_plain_state_dict_file_reads_with_empty_meta(tmp_path):
    torch.save(_net().state_dict(), tmp_path / "sd.pt")
    meta, state = read_checkpoint(tmp_path / "sd.pt")
    assert meta == {} and set(state) == set(_net().state_dict())


@pytest.mark.parametrize(
    "content, message",
    [
        ({"format": "prunetune-base/0"}, "has format 'prunetune-base/0'; this prunetune reads"),
        ({"format": FORMAT, "meta": [], "state_dict": {}}, "no valid 'meta' mapping"),
        ({"format": FORMAT, "meta": {"model": 3}}, "meta 'model' is not a name"),
        ({"format": FORMAT, "meta": {"metrics": {"a": "x"}}}, "'metrics' is not a mapping of"),
        ({"format": FORMAT, "meta": {}, "state_dict": {"w": 1}}, "no valid 'state_dict'"),
        ({"weights": [1, 2]}, "neither a prunetune checkpoint nor a state_dict"),
    ],
)
def test_files_of_another_shape_are_one_line_errors(tmp_path, content, message):
    torch.save(content, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(tmp_path / "x.pt")


def test_missing_and_unreadable_files_are_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "none.pt")
    (tmp_path / "text.pt").write_text("not a torch file")
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as info:
        read_checkpoint(tmp_path / "text.pt")
    assert "\n" not in str(info.value)


def test_a_checkpoint_of_another_model_does_not_fit(tmp_path):
    state = build_for("tiny_cnn", (1, 8, 8), 5).state_dict()
    with pytest.raises(CheckpointError, match="'f.pt' does not fit this model \\(size mismatch"):
        load_into(_net(), state, "f.pt")


def test_build_for_takes_a_shape_and_class_count():
    model = build_for("lenet5", (3, 32, 32), 7).eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
