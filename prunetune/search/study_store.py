"""Which storage a study lives in. Optuna keeps a study's storage private, so the storage object
prunetune created is remembered beside each study it opens (weakly: it goes with the study).
Optuna only, no torch: the report layer and its tests use it."""

from __future__ import annotations

import weakref

import optuna

_STORAGES: weakref.WeakKeyDictionary[optuna.Study, optuna.storages.BaseStorage] = (
    weakref.WeakKeyDictionary()
)


def bind(study: optuna.Study, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Remember `storage` as the one `study` lives in (see `storage_of`) and return `study`. Every
    study prunetune opens goes through here (open_study, load_existing, load, the screening
    study)."""
    _STORAGES[study] = storage
    return study


def storage_of(
    study: optuna.Study, *, required: bool = False
) -> optuna.storages.BaseStorage | None:
    """The storage object `study` was opened with (`bind`); None for a study prunetune did not
    open (an in-memory study a caller made: no URL, no screening study), or with `required` a
    ValueError."""
    storage = _STORAGES.get(study)
    if storage is None and required:
        raise ValueError(
            f"study {study.study_name!r} was not opened by prunetune "
            "(open it with study_store.load, or bind it to its storage)"
        )
    return storage


def load(storage: optuna.storages.BaseStorage, name: str, **create) -> optuna.Study:
    """The study `name` in `storage`, bound to it; with keyword arguments of
    `optuna.create_study` (directions, sampler, ...) it is created when missing."""
    if create:
        study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True, **create)
    else:
        study = optuna.load_study(study_name=name, storage=storage)
    return bind(study, storage)


def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    return name in optuna.get_all_study_names(storage)
