"""An export's card on disk (prunetune.export.report): card.json and card.md written, the model
file found, the terminal paragraph."""

from __future__ import annotations

import json

from prunetune.export.report import Card, write_card
from tests.export.builders import card_data


def test_the_card_is_written_as_json_and_markdown(tmp_path):
    card = Card(tmp_path, card_data())
    write_card(card)
    assert json.loads((tmp_path / "card.json").read_text()) == card.data.to_json()
    assert "Speedup 4.0x" in (tmp_path / "card.md").read_text()
    assert card.model_path == tmp_path / "model.onnx"
    summary = card.summary()
    assert summary.startswith(f"exported trial 3 of study s to {tmp_path / 'model.onnx'} (onnx)")
    assert "test accuracy 91.00% (base 93.00%)" in summary and "5.0x smaller" in summary
