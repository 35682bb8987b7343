"""The model registry of a study (prunetune.search.tracking.registry) on a real MLflow store: one
registered model per study, a version per trial with its metrics as tags, found again by trial
and tags, a selection registered once."""

from __future__ import annotations

import mlflow
import pytest

from prunetune.search.tracking.registry import (
    register,
    register_selection,
    registered_name,
    version_of,
)
from tests.search.studies import record


@pytest.fixture
def client(tmp_path):
    return mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _run(client) -> str:
    return client.create_run(client.create_experiment("s")).info.run_id


def test_a_version_per_trial_with_its_metrics_found_by_trial_and_tags(client):
    run_id = _run(client)
    version = register(client, "s", record(4, accuracy=0.8125), artifact="a", run_id=run_id)
    client.set_model_version_tag(registered_name("s"), version, "format", "onnx")
    assert registered_name("s") == "prunetune-s"
    tags = client.get_model_version("prunetune-s", version).tags
    assert tags["trial"] == "4" and tags["accuracy"] == "0.8125"
    assert version_of(client, "s", 4) == version == version_of(client, "s", 4, format="onnx")
    assert version_of(client, "s", 4, format="pt2") is None and version_of(client, "s", 5) is None


def test_a_selection_is_registered_once_and_only_with_its_weights(client, tmp_path):
    run_id = _run(client)
    chosen = record(2)
    chosen.weights = str(tmp_path / "trial_2.pt")
    register_selection(client, run_id, "s", chosen)  # no file: nothing registered
    assert version_of(client, "s", 2) is None
    (tmp_path / "trial_2.pt").write_bytes(b"weights")
    register_selection(client, run_id, "s", chosen)
    register_selection(client, run_id, "s", chosen)
    versions = client.search_model_versions("name = 'prunetune-s'")
    assert len(versions) == 1 and versions[0].tags["format"] == "prunetune"
    files = {f.path for f in client.list_artifacts(run_id, "selected/trial-00002")}
    assert files == {"selected/trial-00002/trial_2.pt", "selected/trial-00002/model.json"}
