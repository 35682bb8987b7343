"""Logging an export to MLflow (prunetune.export.mlflow_log): which tracking URI an export uses, and
artifact folders of a copied study that would still write into the original."""

from __future__ import annotations

import pytest

from prunetune.errors import PrunetuneError
from prunetune.export.mlflow_log import foreign_artifacts, search_tracking_uri


def test_the_export_uses_the_given_uri_else_the_searchs_unless_masked(monkeypatch):
    assert search_tracking_uri("http://given", "sqlite:///stored.db") == "http://given"
    assert search_tracking_uri(None, "sqlite:///stored.db") == "sqlite:///stored.db"
    masked = "postgresql://u:***@h/db"
    assert search_tracking_uri("postgresql://u:pw@h/db", masked) == "postgresql://u:pw@h/db"
    with pytest.raises(PrunetuneError, match="stored without its password"):
        search_tracking_uri(None, masked)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://u:pw@h/db")
    assert search_tracking_uri(None, masked) is None  # the environment's, resolved later


def test_artifacts_outside_the_stores_folder_are_foreign(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    inside = f"file://{tmp_path / 'mlruns' / 'artifacts' / '1'}"
    elsewhere = f"file://{tmp_path / 'original' / 'mlruns' / 'artifacts' / '1'}"
    assert foreign_artifacts(uri, inside) is None
    assert foreign_artifacts(uri, elsewhere) == str(
        tmp_path / "original" / "mlruns" / "artifacts" / "1"
    )
    assert foreign_artifacts("http://server", elsewhere) is None
    assert foreign_artifacts(uri, "s3://bucket/1") is None
