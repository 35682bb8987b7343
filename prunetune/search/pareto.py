"""Pareto analysis of finished trials: front, hypervolume, knee point (the objectives are in
prunetune.search.objectives, the selection rules in prunetune.search.selection).

Pure functions: they compute and return values; nothing here prints, plots or logs.

Data model
----------
A *point* is one trial's metrics, a mapping from metric key to number, e.g.
``{"accuracy": 0.981, "flops": 1.2e6, "fps": 5400.0, "size_bytes": 48_000}``; extra keys are
ignored. ``points`` is a sequence of such mappings and every result that names a point is an
index into that sequence. An *objective* is a metric key with a direction (:class:`Objective`);
wherever objectives are taken, a standard objective's name (``"size"``) may stand for it.

Normalisation and reference point (hypervolume)
-----------------------------------------------
Each objective value is divided by the base model's value (``normalise_by``, a point: the base
model's metrics), so the base model is 1.0 everywhere, then negated for "maximize" objectives so
that every objective is minimised. The default reference point is the value 0 for "maximize"
objectives (accuracy 0, FPS 0) and the base model's value for "minimize" ones (1.0 x base), so the
hypervolume measures how much cheaper than the base model the front is, weighted by how much of
the base model's benefit (accuracy, speed) it keeps. Points not strictly better than the reference
in every objective contribute nothing. ``normalise_by=None`` means the points are already relative
to the base model (base value 1.0 for every objective).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from prunetune.errors import ConfigError
from prunetune.search.objectives import OBJECTIVES, Objective, Point, resolve

__all__ = [
    "UNIT_HV_NOTE",
    "hypervolume",
    "hypervolume_history",
    "knee_point",
    "non_dominated",
    "unit_hypervolume_history",
]


def _number(point: Point, key: str, where: str) -> float:
    """``point[key]`` as a float; ConfigError if it is missing, not a number, or NaN."""
    if key not in point:
        raise ConfigError(f"{where} has no metric {key!r}; it has: {', '.join(sorted(point))}")
    try:
        value = float(point[key])
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: metric {key!r} is not a number: {point[key]!r}") from None
    if math.isnan(value):
        raise ConfigError(f"{where}: metric {key!r} is NaN")
    return value


def _bases(objectives: list[Objective], normalise_by: Point | None) -> np.ndarray:
    if normalise_by is None:
        return np.ones(len(objectives))
    bases = np.array([_number(normalise_by, o.key, "normalise_by") for o in objectives])
    bad = [o.key for o, b in zip(objectives, bases) if not (0 < b < math.inf)]
    if bad:
        raise ConfigError(
            f"normalise_by: base values must be positive and finite: {', '.join(bad)}"
        )
    return bases


def _signs(objectives: list[Objective]) -> np.ndarray:
    return np.array([-1.0 if o.direction == "maximize" else 1.0 for o in objectives])


def _min_space(
    points: Sequence[Point], objectives: list[Objective], bases: np.ndarray
) -> np.ndarray:
    """An (n, d) array: each value divided by its base and negated where maximised."""
    values = np.array(
        [[_number(p, o.key, f"point {i}") for o in objectives] for i, p in enumerate(points)],
        dtype=float,
    )
    return values / bases * _signs(objectives)


def _front_mask(m: np.ndarray) -> np.ndarray:
    """True for rows of minimisation matrix ``m`` that no other row dominates.

    Row j dominates row i when it is <= in every column and < in at least one, so equal rows do
    not dominate each other.
    """
    le = (m[:, None, :] <= m[None, :, :]).all(axis=2)  # le[j, i]: m[j] <= m[i] everywhere
    lt = (m[:, None, :] < m[None, :, :]).any(axis=2)
    return ~(le & lt).any(axis=0)


def non_dominated(points: Sequence[Point], objectives: Sequence[Objective | str]) -> list[int]:
    """Indices (ascending) of the points on the Pareto front.

    A point is dominated when another is at least as good in every objective and strictly better
    in one. Points equal in every objective do not dominate each other, so duplicates on the
    front are all kept. Works for any number (>= 1) of objectives; no points gives ``[]``.
    Raises ConfigError if a point lacks an objective's metric or it is not a number.
    """
    objs = resolve(objectives)
    if not points:
        return []
    m = _min_space(points, objs, np.ones(len(objs)))
    return [int(i) for i in np.flatnonzero(_front_mask(m))]


def _reference(
    objectives: list[Objective], bases: np.ndarray, reference: Point | None
) -> np.ndarray:
    """The reference point in normalised minimisation space (defaults: module docstring)."""
    given = dict(reference or {})
    unknown = sorted(set(given) - {o.key for o in objectives})
    if unknown:
        raise ConfigError(
            f"reference has keys that are no objective's metric: {', '.join(unknown)}; "
            f"objective metrics: {', '.join(o.key for o in objectives)}"
        )
    raw = np.array(
        [
            _number(given, o.key, "reference")
            if o.key in given
            else (0.0 if o.direction == "maximize" else b)
            for o, b in zip(objectives, bases)
        ]
    )
    return raw / bases * _signs(objectives)


def _hv2d(pts: np.ndarray, ref: np.ndarray) -> float:
    """Exact 2-D hypervolume by a sweep over x; every point is strictly below ``ref``."""
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    volume, y_bound = 0.0, ref[1]
    for x, y in pts:
        if y < y_bound:
            volume += (ref[0] - x) * (y_bound - y)
            y_bound = y
    return float(volume)


def _exclusive(p: np.ndarray, others: np.ndarray, ref: np.ndarray) -> float:
    """Volume dominated by ``p`` and by none of ``others``: p's box minus the hypervolume of
    ``others`` limited to (clipped into) that box."""
    limited = np.maximum(others, p)
    if len(limited):
        limited = limited[_front_mask(limited)]
    return float(np.prod(ref - p)) - _hv(limited, ref)


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume of minimisation points all strictly below ``ref``.

    1-D: a length; 2-D: a sweep; beyond: WFG (While, Bradstreet, Barone 2012), the sum over the
    sorted points of each one's exclusive contribution relative to the points after it.
    """
    n, d = pts.shape
    if n == 0:
        return 0.0
    if d == 1:
        return float(ref[0] - pts[:, 0].min())
    if d == 2:
        return _hv2d(pts, ref)
    pts = pts[np.lexsort(pts.T[::-1])]
    return sum(_exclusive(pts[i], pts[i + 1 :], ref) for i in range(n))


def hypervolume(
    points: Sequence[Point],
    objectives: Sequence[Objective | str],
    reference: Point | None = None,
    *,
    normalise_by: Point | None = None,
) -> float:
    """Exact hypervolume dominated by ``points`` with respect to a reference point.

    Values are normalised by ``normalise_by`` (the base model's metrics; ``None``: already
    relative) and turned into minimisation as the module docstring describes; the result is in
    those unitless normalised units. ``reference`` is a point in the same units as ``points``
    (keyed by objective metric keys); objectives it leaves out take the default (0 for
    "maximize", the base value for "minimize"). Only points strictly better than the reference in
    every objective contribute. Exact for any number of objectives (2-D sweep, WFG beyond).
    No points gives 0.0. Raises ConfigError for missing or non-numeric metrics, non-positive
    base values, or reference keys that are no objective's metric.
    """
    objs = resolve(objectives)
    bases = _bases(objs, normalise_by)
    ref = _reference(objs, bases, reference)
    if not points:
        return 0.0
    m = _min_space(points, objs, bases)
    m = m[(m < ref).all(axis=1)]
    return _hv(m[_front_mask(m)], ref) if len(m) else 0.0


def hypervolume_history(
    points_in_trial_order: Sequence[Point],
    objectives: Sequence[Objective | str],
    reference: Point | None = None,
    *,
    normalise_by: Point | None = None,
) -> list[float]:
    """``hypervolume`` of the first k points for k = 1 .. len(points): one value per trial.

    Same arguments and conventions as :func:`hypervolume`. Each trial adds its exclusive
    contribution to the running front's volume, so the series is non-decreasing by construction
    (a contribution that round-off makes negative counts as 0).
    """
    objs = resolve(objectives)
    bases = _bases(objs, normalise_by)
    ref = _reference(objs, bases, reference)
    if not points_in_trial_order:
        return []
    m = _min_space(points_in_trial_order, objs, bases)
    history: list[float] = []
    front = np.empty((0, len(objs)))
    volume = 0.0
    for row in m:
        if (row < ref).all() and not (front <= row).all(axis=1).any():
            volume += max(0.0, _exclusive(row, front, ref))
            front = np.vstack([front, row])
            front = front[_front_mask(front)]
        history.append(volume)
    return history


UNIT_HV_NOTE = (
    "the share of the unit box dominated by the front: error 0..1 x each cost 0..1 of the base's, "
    "FPS as latency 1/speedup; reference point: error 1 at the base's costs; 1 = perfect and free"
)


def _unit_point(point: Point, objectives: list[Objective], base: Point) -> dict[str, float]:
    """One point as minimisation values on [0, 1] for a dominating point: accuracy as error
    1 - accuracy, fps as latency relative to the base (1 / speedup where measured side by side,
    else base fps / fps), a user metric to maximize as 1 - value / base value and one to minimize
    as value / base value (where the base's value is not positive: 1 - (value - base) and
    1 + (value - base)), every other objective as value / base value."""
    out = {}
    for o in objectives:
        v = _number(point, o.key, "point")
        if o.key == "accuracy":
            out[o.key] = 1.0 - v
        elif o.key not in OBJECTIVES:  # a user metric: 1 - value / base (maximize), value / base
            b = _number(
                base, o.key, "base"
            )  # (minimize); shifted by the base where it is not positive
            if o.direction == "maximize":
                out[o.key] = 1.0 - (v / b if b > 0 else v - b)
            else:
                out[o.key] = v / b if b > 0 else 1.0 + (v - b)
        elif o.key == "fps":
            speedup = point.get("speedup")
            out[o.key] = (
                1.0 / speedup
                if speedup
                else _number(base, "fps", "base") / v
                if v > 0
                else math.inf
            )
        else:
            out[o.key] = v / _number(base, o.key, "base")
    return out


def unit_hypervolume_history(
    points_in_trial_order: Sequence[Point], objectives: Sequence[Objective | str], base: Point
) -> list[float]:
    """Hypervolume history on a stated [0, 1] scale (UNIT_HV_NOTE): every objective mapped by
    `_unit_point` to a minimised value that is 1 at the reference (error 1, the base's costs and
    latency), so only points cheaper and faster than the base contribute and a perfect model at zero
    cost would score 1. Non-decreasing; [] for no points."""
    objs = resolve(objectives)
    unit = [_unit_point(p, objs, base) for p in points_in_trial_order]
    minimised = [Objective(o.name, "minimize", o.key) for o in objs]
    return hypervolume_history(unit, minimised, normalise_by=None)


def knee_point(points: Sequence[Point], objectives: Sequence[Objective | str]) -> int:
    """Index of the front member closest to the ideal point: the balanced compromise.

    Each objective is rescaled to [0, 1] over the front's range (0 = best value on the front,
    1 = worst; an objective constant on the front is 0 for all), and the knee is the front member
    with the smallest Euclidean distance to the ideal point (all zeros). Ties go to the lowest
    index. Because the rescaling is to the front's own range, dividing by a base model would not
    change the answer, so there is no normalisation argument. Raises ConfigError for no points.
    """
    objs = resolve(objectives)
    if not points:
        raise ConfigError("knee_point needs at least one point")
    m = _min_space(points, objs, np.ones(len(objs)))
    front = np.flatnonzero(_front_mask(m))
    fm = m[front]
    low, span = fm.min(axis=0), np.ptp(fm, axis=0)
    scaled = np.divide(fm - low, span, out=np.zeros_like(fm), where=span > 0)
    distance = np.sqrt((scaled**2).sum(axis=1))
    return int(front[np.argmin(distance)])  # argmin: first of equal minima = lowest index
