"""prunetune.config.parts: small frozen parts, their defaults and derived values."""

from __future__ import annotations

import dataclasses

import pytest

from prunetune.config import (
    Budget,
    FinetuneRecipe,
    Measurement,
    SearchPlan,
    SearchSettings,
    Stores,
)


def test_parts_cannot_be_changed_once_checked():
    cfg = SearchSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.budget.trials = 0  # would skip the check of trials >= 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.budget = Budget(trials=3)


def test_derived_values_of_the_parts():
    assert Stores().storage_url == "sqlite:///mlruns/optuna.db"
    assert Stores(storage="sqlite:////tmp/s.db").storage_url == "sqlite:////tmp/s.db"
    assert SearchPlan(strategy="search", screen=2).screening and not SearchPlan().screening
    assert Measurement(train_threads="3").train_threads == 3  # a flag's string, kept as a number


def test_the_proxy_fine_tune_is_an_eighth_of_the_brief_one_unless_given():
    recipe = FinetuneRecipe(subset=640, epochs=2, batch_size=64)  # 20 steps
    assert recipe.proxy_steps(SearchPlan()) == 4  # at least 4
    assert FinetuneRecipe(subset=6400, epochs=2).proxy_steps(SearchPlan()) == 25
    assert recipe.proxy_steps(SearchPlan(proxy_steps=7)) == 7
    assert recipe.proxy_steps(SearchPlan(strategy="search")) == 0
    assert FinetuneRecipe(epochs=0).proxy_steps(SearchPlan()) == 0
