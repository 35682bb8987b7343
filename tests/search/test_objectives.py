"""The objectives a search can optimise (search/objectives.py): the standard ones, user metrics
as `metric:direction`, resolving names."""

from __future__ import annotations

import pytest

from prunetune.errors import ConfigError, UnknownNameError
from prunetune.search.objectives import (
    OBJECTIVES,
    Objective,
    get_objective,
    resolve,
    user_objective,
)


def test_standard_objectives() -> None:
    assert {n: (o.key, o.direction) for n, o in OBJECTIVES.items()} == {
        "accuracy": ("accuracy", "maximize"),
        "flops": ("flops", "minimize"),
        "macs": ("macs", "minimize"),
        "fps": ("fps", "maximize"),
        "size": ("size_bytes", "minimize"),
        "params": ("params", "minimize"),
    }
    assert get_objective("size") is OBJECTIVES["size"]


def test_unknown_objective_names_the_known_ones() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_objective("latency")
    assert info.value.kind == "objective" and info.value.name == "latency"
    assert "accuracy" in str(info.value) and "size" in str(info.value)
    for name in ("map:up", ":maximize", "flops:maximize"):  # no user metric named like a standard
        with pytest.raises(UnknownNameError):
            get_objective(name)


def test_a_user_metric_is_an_objective_on_its_own_key() -> None:
    assert get_objective("map:maximize") == Objective("map:maximize", "maximize", key="map")
    assert get_objective("a:b:minimize").key == "a:b"


def test_user_objective_names() -> None:
    assert user_objective("map", "maximize") == "map:maximize"
    assert user_objective("flops", "minimize") == "flops"  # the standard one, by its name
    with pytest.raises(ConfigError, match="always minimized, not maximized"):
        user_objective("flops", "maximize")
    with pytest.raises(ConfigError, match="direction must be"):
        user_objective("map", "up")
    for bad in ("", "a:b"):
        with pytest.raises(ConfigError, match="non-empty and without ':'"):
            user_objective(bad, "maximize")


def test_objective_rejects_bad_direction_and_objectives_need_a_sequence() -> None:
    with pytest.raises(ConfigError, match="direction"):
        Objective("accuracy", "max")  # type: ignore[arg-type]
    assert resolve(["size", OBJECTIVES["fps"]]) == [OBJECTIVES["size"], OBJECTIVES["fps"]]
    with pytest.raises(ConfigError, match="sequence"):
        resolve("accuracy")
    with pytest.raises(ConfigError, match="sequence"):
        resolve(OBJECTIVES["fps"])
    with pytest.raises(ConfigError, match="at least one"):
        resolve([])
