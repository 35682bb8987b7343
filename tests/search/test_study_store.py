"""prunetune.search.study_store: the storage a study lives in, kept beside the study (Optuna keeps
its own private). Optuna only: in-memory and SQLite storages, no torch."""

from __future__ import annotations

import gc
import weakref

import optuna
import pytest

from prunetune.search.study_store import bind, load, storage_of, study_exists


def test_load_creates_or_loads_a_study_bound_to_its_storage(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}")
    assert not study_exists(storage, "s")
    created = load(storage, "s", directions=["minimize"])
    assert study_exists(storage, "s") and storage_of(created) is storage
    again = load(storage, "s")
    assert again.study_name == "s" and storage_of(again, required=True) is storage
    with pytest.raises(KeyError):  # without create arguments a missing study is not made
        load(storage, "missing")


def test_a_study_prunetune_did_not_open_has_no_storage_here():
    study = optuna.create_study()
    assert storage_of(study) is None
    with pytest.raises(ValueError, match="not opened by prunetune"):
        storage_of(study, required=True)
    storage = optuna.storages.InMemoryStorage()
    assert storage_of(bind(study, storage)) is storage


def test_the_binding_keeps_no_study_alive():
    study = load(optuna.storages.InMemoryStorage(), "gone", directions=["minimize"])
    ref = weakref.ref(study)
    del study
    gc.collect()
    assert ref() is None
