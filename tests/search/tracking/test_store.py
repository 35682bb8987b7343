"""The tracking store (prunetune.search.tracking.store): the URI asked for, made absolute, a SQLite
store checked before a search writes and created whole; other files refused."""

from __future__ import annotations

import pytest

from prunetune.errors import PrunetuneError
from prunetune.search.tracking.store import (
    DEFAULT_URI,
    check_store,
    prepare_store,
    requested_uri,
    tracking_uri,
)


def test_the_uri_is_the_given_one_else_the_environments_else_the_default(monkeypatch):
    assert requested_uri("http://h:5000") == "http://h:5000"
    assert requested_uri(None) == DEFAULT_URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert requested_uri(None) == "sqlite:///elsewhere.db"


def test_a_sqlite_uri_is_made_absolute_with_its_folder(tmp_path):
    assert tracking_uri(None) == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert (tmp_path / "mlruns").is_dir() and not (tmp_path / "mlruns" / "mlflow.db").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(PrunetuneError, match="cannot create tracking folder"):
        tracking_uri(f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}")


def test_a_missing_store_is_created_whole_and_then_passes_the_check(tmp_path):
    uri = prepare_store(None)
    assert uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    check_store(uri)
    assert prepare_store(uri) == uri  # an existing store is used as it is


def test_a_file_that_is_no_mlflow_store_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "other.db").write_text("a csv, say")
    with pytest.raises(PrunetuneError, match="not a SQLite database"):
        check_store(f"sqlite:///{tmp_path / 'other.db'}")
    with pytest.raises(PrunetuneError):
        check_store(f"file://{tmp_path / 'runs'}")
