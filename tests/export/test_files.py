"""The files of an export (prunetune.export.files): flags checked, an output folder that never
overwrites anything but an earlier export, and holds exactly one."""

from __future__ import annotations

import json

import pytest

from prunetune.errors import ConfigError, PrunetuneError
from prunetune.export.files import CARD_JSON, check_export_flags, check_output, output_folder


@pytest.mark.parametrize(
    "fmt, int8, retrain, message",
    [
        ("tflite", False, 0, "unknown export format 'tflite'"),
        ("pt2", True, 0, "use it with --format onnx, not pt2"),
        ("onnx", False, -1, "--retrain-epochs must be >= 0"),
    ],
)
def test_flags_that_cannot_be_exported_are_refused(fmt, int8, retrain, message):
    with pytest.raises(ConfigError, match=message):
        check_export_flags(fmt, int8, retrain)
    check_export_flags("onnx", True, 2)


def test_other_files_are_never_overwritten(tmp_path):
    (tmp_path / "model.onnx").write_text("someone else's")
    with pytest.raises(
        PrunetuneError, match="already holds model.onnx, not written by a prunetune"
    ):
        check_output(tmp_path)
    assert check_output(tmp_path / "new") == tmp_path / "new" and not (tmp_path / "new").exists()


def test_an_earlier_export_is_replaced_whole(tmp_path):
    card = {"study": "s", "trial": 3, "file": "model.onnx", "provenance": {}}
    (tmp_path / CARD_JSON).write_text(json.dumps(card))
    (tmp_path / "model.onnx").write_text("old")
    (tmp_path / "notes.txt").write_text("the user's")
    said: list[str] = []
    check_output(tmp_path, said.append)
    assert said and "study 's', trial 3" in said[0]
    output_folder(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
