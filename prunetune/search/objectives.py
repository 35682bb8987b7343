"""The objectives a search can optimise: the standard ones by name (accuracy, flops, macs, fps,
size, params) and a user metric as `metric:maximize` / `metric:minimize`.

A *point* is one trial's metrics, a mapping from metric key to number (see pareto); an objective is
a metric key with a direction. Wherever objectives are taken, a standard objective's name (`"size"`)
may stand for it (`resolve`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from prunetune.errors import ConfigError, UnknownNameError

__all__ = ["OBJECTIVES", "Objective", "Point", "get_objective", "resolve", "user_objective"]

Point = Mapping[str, float]
Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class Objective:
    """A metric to optimise: ``name`` is what users type, ``key`` the metric key in a point.

    ``key`` defaults to ``name``; ``direction`` is ``"maximize"`` or ``"minimize"``.
    """

    name: str
    direction: Direction
    key: str = ""

    def __post_init__(self) -> None:
        if self.direction not in ("maximize", "minimize"):
            raise ConfigError(
                f"objective {self.name!r}: direction must be 'maximize' or 'minimize', "
                f"not {self.direction!r}"
            )
        if not self.key:
            object.__setattr__(self, "key", self.name)


OBJECTIVES: Mapping[str, Objective] = MappingProxyType(
    {
        o.name: o
        for o in (
            Objective("accuracy", "maximize"),
            Objective("flops", "minimize"),
            Objective("macs", "minimize"),
            Objective("fps", "maximize"),
            Objective("size", "minimize", key="size_bytes"),
            Objective("params", "minimize"),
        )
    }
)
"""The project's standard objectives, by name (read-only)."""


def get_objective(name: str) -> Objective:
    """The standard objective called ``name``, or a user metric written ``metric:maximize`` /
    ``metric:minimize`` (a metric the Python API's eval_fn returns); UnknownNameError otherwise."""
    if name in OBJECTIVES:
        return OBJECTIVES[name]
    metric, sep, direction = name.rpartition(":")
    if sep and metric and direction in ("maximize", "minimize") and metric not in OBJECTIVES:
        return Objective(name, direction, key=metric)  # type: ignore[arg-type]
    raise UnknownNameError("objective", name, list(OBJECTIVES))


def user_objective(metric: str, direction: str) -> str:
    """The objective name of a user metric (see get_objective): a standard objective's own name
    when `metric` is one and `direction` is its direction; ConfigError for a wrong direction."""
    if direction not in ("maximize", "minimize"):
        raise ConfigError(
            f"objective {metric!r}: direction must be 'maximize' or 'minimize', not {direction!r}"
        )
    if metric in OBJECTIVES:
        if OBJECTIVES[metric].direction != direction:
            raise ConfigError(
                f"objective {metric!r} is always {OBJECTIVES[metric].direction}d, not {direction}d"
            )
        return metric
    if not metric or ":" in metric:
        raise ConfigError(f"a user metric's name must be non-empty and without ':', got {metric!r}")
    return f"{metric}:{direction}"


def resolve(objectives: Sequence[Objective | str]) -> list[Objective]:
    """The Objective of each entry (names through `get_objective`); ConfigError for a single
    objective instead of a sequence, or none."""
    if isinstance(objectives, (str, Objective)):
        raise ConfigError("objectives must be a sequence of objectives, not a single one")
    resolved = [o if isinstance(o, Objective) else get_objective(o) for o in objectives]
    if not resolved:
        raise ConfigError("at least one objective is needed")
    return resolved
