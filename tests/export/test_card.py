"""The typed report card (prunetune.export.card): ratios measured side by side, the MLflow record
added, card.json's documented key order."""

from __future__ import annotations

import json

from tests.export.builders import card_data


def test_speedup_and_size_ratio_come_from_the_exported_files():
    card = card_data()
    assert card.speedup == 4.0 and card.size_ratio == 5.0


def test_the_mlflow_record_is_added_to_a_copy():
    card = card_data()
    logged = card.with_mlflow({"run_id": "r1"})
    assert logged.provenance.mlflow == {"run_id": "r1"} and card.provenance.mlflow is None


def test_card_json_holds_the_documented_keys_in_order():
    data = card_data().to_json()
    assert list(data) == [
        "study",
        "trial",
        "format",
        "int8",
        "file",
        "selection",
        "runtime",
        "base",
        "compressed",
        "speedup",
        "size_ratio",
        "recorded",
        "verification",
        "layers",
        "config",
        "retrain",
        "provenance",
    ]
    assert data["compressed"]["test_accuracy"] == 0.91 and data["layers"][0]["runs_as"] == "float32"
    assert json.loads(json.dumps(data)) == data  # JSON as it is
