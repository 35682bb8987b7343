"""Pareto front, hypervolume, knee (search/pareto.py) on small hand-made point sets. Objectives and
selection rules: tests/search/test_objectives.py, test_selection.py."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from prunetune.errors import ConfigError, UnknownNameError
from prunetune.search.objectives import Objective
from prunetune.search.pareto import (
    hypervolume,
    hypervolume_history,
    knee_point,
    non_dominated,
    unit_hypervolume_history,
)

# Minimised unitless objectives "a", "b", "c", "d" for geometric tests: with normalise_by=None the
# default reference is 1.0 in each, so points in [0, 1)^d make unit-box hand computations easy.
MIN = [Objective(name, "minimize") for name in "abcd"]


def pts(*rows: tuple[float, ...]) -> list[dict[str, float]]:
    return [dict(zip("abcd", row)) for row in rows]


# --- objectives, as pareto takes them ------------------------------------------------------------


def test_unknown_objective_or_a_single_one_is_refused() -> None:
    with pytest.raises(UnknownNameError):
        non_dominated([{"accuracy": 1.0}], ["accuracy", "latency"])
    with pytest.raises(ConfigError, match="sequence"):
        non_dominated([{"accuracy": 1.0}], "accuracy")


def test_missing_or_nan_metric_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="point 1 has no metric 'flops'"):
        non_dominated([{"accuracy": 0.9, "flops": 1.0}, {"accuracy": 0.9}], ["accuracy", "flops"])
    with pytest.raises(ConfigError, match="NaN"):
        hypervolume([{"a": math.nan}], MIN[:1])


# --- non_dominated -----------------------------------------------------------------------------


def test_non_dominated_empty_and_one_point() -> None:
    assert non_dominated([], MIN[:2]) == []
    assert non_dominated(pts((0.3, 0.7)), MIN[:2]) == [0]


def test_duplicates_on_the_front_are_all_kept() -> None:
    points = pts((0.2, 0.8), (0.5, 0.5), (0.2, 0.8), (0.6, 0.6), (0.5, 0.5))
    assert non_dominated(points, MIN[:2]) == [0, 1, 2, 4]


def test_equal_in_one_objective_better_in_another_dominates() -> None:
    points = pts((0.5, 0.5), (0.5, 0.4), (0.4, 0.5))
    assert non_dominated(points, MIN[:2]) == [1, 2]


def test_one_objective_keeps_every_best_tie() -> None:
    points = [{"accuracy": 0.9}, {"accuracy": 0.95}, {"accuracy": 0.95}, {"accuracy": 0.2}]
    assert non_dominated(points, ["accuracy"]) == [1, 2]


def test_mixed_directions() -> None:
    points = [
        {"accuracy": 0.98, "flops": 100},  # best accuracy
        {"accuracy": 0.95, "flops": 40},  # on the front
        {"accuracy": 0.95, "flops": 60},  # same accuracy, more flops: dominated by 1
        {"accuracy": 0.90, "flops": 20},  # cheapest
        {"accuracy": 0.97, "flops": 100},  # dominated by 0
    ]
    assert non_dominated(points, ["accuracy", "flops"]) == [0, 1, 3]
    # flipping one direction changes the answer: maximising flops keeps only the big models
    assert non_dominated(points, ["accuracy", Objective("flops", "maximize")]) == [0]


def test_three_objectives_and_custom_keys() -> None:
    points = [
        {"test_accuracy": 0.9, "fps": 100, "size_bytes": 50},
        {"test_accuracy": 0.8, "fps": 200, "size_bytes": 50},
        {"test_accuracy": 0.8, "fps": 100, "size_bytes": 20},
        {"test_accuracy": 0.8, "fps": 100, "size_bytes": 50},  # dominated by every other
    ]
    objectives = [Objective("test_accuracy", "maximize"), "fps", "size"]
    assert non_dominated(points, objectives) == [0, 1, 2]


# --- hypervolume -------------------------------------------------------------------------------


BASE = {"accuracy": 1.0, "flops": 100.0}
TWO = [
    {"accuracy": 0.5, "flops": 50.0},  # box 0.5 x 0.5 = 0.25
    {"accuracy": 1.0, "flops": 80.0},  # box 1.0 x 0.2 = 0.20, overlapping the first by 0.5 x 0.2
]


def test_hypervolume_two_objectives_by_hand() -> None:
    assert hypervolume(TWO, ["accuracy", "flops"], normalise_by=BASE) == pytest.approx(0.35)
    assert hypervolume(TWO[:1], ["accuracy", "flops"], normalise_by=BASE) == pytest.approx(0.25)
    assert hypervolume([], ["accuracy", "flops"], normalise_by=BASE) == 0.0


def test_hypervolume_is_relative_to_the_base_model() -> None:
    # halving the base accuracy doubles every normalised accuracy, so the volume doubles
    half = {"accuracy": 0.5, "flops": 100.0}
    assert hypervolume(TWO, ["accuracy", "flops"], normalise_by=half) == pytest.approx(0.70)
    # the base model itself sits on the default reference (1.0 x base cost): no volume
    assert hypervolume([BASE], ["accuracy", "flops"], normalise_by=BASE) == 0.0
    with pytest.raises(ConfigError, match="positive"):
        hypervolume(TWO, ["accuracy", "flops"], normalise_by={"accuracy": 1.0, "flops": 0.0})


@pytest.mark.parametrize(
    "outsider",
    [
        {"accuracy": 1.0, "flops": 120.0},  # costlier than the base model
        {"accuracy": 1.0, "flops": 100.0},  # exactly as costly: on the reference, no volume
        {"accuracy": 0.0, "flops": 1.0},  # accuracy at the reference (0)
        {"accuracy": -0.1, "flops": 1.0},  # worse than the reference
    ],
)
def test_points_not_better_than_the_reference_add_nothing(outsider: dict[str, float]) -> None:
    value = hypervolume([*TWO, outsider], ["accuracy", "flops"], normalise_by=BASE)
    assert value == pytest.approx(0.35)


def test_custom_reference_in_point_units() -> None:
    # flops reference 200 (2.0 x base): boxes become 0.5 x 1.5 and 1.0 x 1.2, overlap 0.5 x 1.2
    value = hypervolume(TWO, ["accuracy", "flops"], {"flops": 200.0}, normalise_by=BASE)
    assert value == pytest.approx(0.75 + 1.2 - 0.6)
    # an accuracy floor of 0.6 cuts the first point out entirely, and the second to 0.4 x 0.2
    value = hypervolume(TWO, ["accuracy", "flops"], {"accuracy": 0.6}, normalise_by=BASE)
    assert value == pytest.approx(0.08)
    with pytest.raises(ConfigError, match="size_bytes"):
        hypervolume(TWO, ["accuracy", "flops"], {"size_bytes": 1.0}, normalise_by=BASE)


def test_hypervolume_one_objective_is_a_length() -> None:
    assert hypervolume(pts((0.25,), (0.75,)), MIN[:1]) == pytest.approx(0.75)


def test_hypervolume_duplicates_count_once() -> None:
    assert hypervolume(pts((0.5, 0.5), (0.5, 0.5)), MIN[:2]) == pytest.approx(0.25)


def test_hypervolume_three_objectives_by_hand() -> None:
    # three boxes of 1 x 0.5 x 0.5 whose pairwise and triple overlaps are all the cube [.5, 1]^3:
    # 3 x 0.25 - 3 x 0.125 + 0.125 = 0.5
    points = pts((0.0, 0.5, 0.5), (0.5, 0.0, 0.5), (0.5, 0.5, 0.0))
    assert hypervolume(points, MIN[:3]) == pytest.approx(0.5)
    # a dominated point and a point outside the reference change nothing
    extra = pts((0.6, 0.6, 0.6), (0.0, 0.0, 1.5))
    assert hypervolume([*points, *extra], MIN[:3]) == pytest.approx(0.5)
    # one point at the origin covers the unit cube
    assert hypervolume(pts((0.0, 0.0, 0.0), *[(0.2, 0.3, 0.4)]), MIN[:3]) == pytest.approx(1.0)


def test_hypervolume_four_objectives_by_hand() -> None:
    # point i is 0 in objective i and 0.5 elsewhere: the common cube [.5, 1]^4 (1/16) plus four
    # disjoint slabs (x_i < .5, others > .5), 1/16 each
    points = pts(*[tuple(0.0 if j == i else 0.5 for j in range(4)) for i in range(4)])
    assert hypervolume(points, MIN) == pytest.approx(5 / 16)


def test_hypervolume_mixed_directions_three_objectives() -> None:
    base = {"accuracy": 0.8, "fps": 1000.0, "size_bytes": 4000.0}
    points = [
        {"accuracy": 0.8, "fps": 2000.0, "size_bytes": 2000.0},  # (1, 2, 0.5): box 1 x 2 x 0.5
        {"accuracy": 0.4, "fps": 3000.0, "size_bytes": 1000.0},  # (.5, 3, .25): box .5 x 3 x .75
    ]
    # overlap: .5 x 2 x .5 = 0.5 -> 1 + 1.125 - 0.5
    value = hypervolume(points, ["accuracy", "fps", "size"], normalise_by=base)
    assert value == pytest.approx(1.625)


def _voxel_count(grid_points: np.ndarray, side: int) -> int:
    """Unit cells [c, c+1) of the box [0, side)^d dominated by some point: the exact volume."""
    d = grid_points.shape[1]
    return sum(
        bool((grid_points <= np.array(cell)).all(axis=1).any())
        for cell in itertools.product(range(side), repeat=d)
    )


@pytest.mark.parametrize("d", [3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hypervolume_is_exact_on_integer_grids(d: int, seed: int) -> None:
    side = 5
    grid = np.random.default_rng(seed).integers(0, side, size=(12, d))
    points = pts(*(tuple(row / side) for row in grid))
    expected = _voxel_count(grid, side) / side**d
    assert hypervolume(points, MIN[:d]) == pytest.approx(expected, abs=1e-12)


def _cells_volume(values: np.ndarray, reference: np.ndarray) -> float:
    """The volume dominated by `values` (minimised) inside the box up to `reference`, exactly and
    by another method than prunetune's: every point's coordinates cut the box into cells that are
    either wholly dominated (some point <= the cell's low corner) or not; sum the dominated ones."""
    d = values.shape[1]
    cuts = [
        np.unique(np.append(values[:, k][values[:, k] < reference[k]], reference[k]))
        for k in range(d)
    ]
    lows = np.stack(np.meshgrid(*[c[:-1] for c in cuts], indexing="ij"), -1).reshape(-1, d)
    sizes = np.stack(np.meshgrid(*[np.diff(c) for c in cuts], indexing="ij"), -1).reshape(-1, d)
    dominated = (values[None, :, :] <= lows[:, None, :]).all(-1).any(-1)
    return float(sizes.prod(axis=1)[dominated].sum())


def test_the_cell_oracle_by_hand() -> None:
    assert _cells_volume(np.array([[0.5, 0.5]]), np.ones(2)) == pytest.approx(0.25)
    assert _cells_volume(
        np.array([[0.0, 0.5], [0.5, 0.0], [1.2, 0.0]]), np.ones(2)
    ) == pytest.approx(0.75)


@pytest.mark.parametrize("d", [2, 3, 4])
def test_hypervolume_agrees_with_an_independent_exact_oracle(d: int) -> None:
    values = np.random.default_rng(d).random((25, d)) * 1.1  # some beyond the reference
    expected = _cells_volume(values, np.ones(d))
    assert expected > 0
    assert hypervolume(pts(*map(tuple, values)), MIN[:d]) == pytest.approx(expected, rel=1e-12)


# --- hypervolume_history -----------------------------------------------------------------------


def test_hypervolume_history_by_hand_and_monotone() -> None:
    trials = [
        TWO[0],  # 0.25
        {"accuracy": 1.0, "flops": 150.0},  # outside the reference
        TWO[1],  # 0.35
        {"accuracy": 0.4, "flops": 90.0},  # dominated
        TWO[1],  # duplicate
        {"accuracy": 1.0, "flops": 10.0},  # dominates everything: 1.0 x 0.9
    ]
    history = hypervolume_history(trials, ["accuracy", "flops"], normalise_by=BASE)
    assert history == pytest.approx([0.25, 0.25, 0.35, 0.35, 0.35, 0.9])
    assert all(a <= b for a, b in itertools.pairwise(history))
    assert hypervolume_history([], ["accuracy", "flops"], normalise_by=BASE) == []


def test_hypervolume_history_matches_prefix_hypervolumes_in_four_objectives() -> None:
    values = np.random.default_rng(7).random((15, 4)) * 1.2  # some points beyond the reference
    points = pts(*map(tuple, values))
    history = hypervolume_history(points, MIN)
    expected = [hypervolume(points[: k + 1], MIN) for k in range(len(points))]
    assert history == pytest.approx(expected, rel=1e-12)
    assert all(a <= b for a, b in itertools.pairwise(history))
    assert history[-1] > history[0]


def test_a_user_metric_whose_base_is_zero_is_shifted_not_divided() -> None:
    """A user metric whose base value is not positive is measured as a difference from the base
    (it used to be divided by the base: NaN and infinities in the history)."""
    base = {"accuracy": 0.9, "loss_gap": 0.0, "gain": 0.0}
    points = [
        {"accuracy": 0.85, "loss_gap": -0.1, "gain": 0.3},  # unit: 0.15, 0.9, 0.7
        {"accuracy": 0.80, "loss_gap": 0.2, "gain": 0.5},  # loss_gap 1.2: beyond the reference
    ]
    objectives = ["accuracy", "loss_gap:minimize", "gain:maximize"]
    history = unit_hypervolume_history(points, objectives, base)
    assert history == pytest.approx([0.85 * 0.1 * 0.3, 0.85 * 0.1 * 0.3])


# --- knee_point --------------------------------------------------------------------------------


def test_knee_on_a_convex_front() -> None:
    # normalised distances to the ideal (0, 0): 1, 0.36, 0.52, 1; the dominated (0.6, 0.6) is
    # ignored
    points = pts((0.0, 1.0), (0.6, 0.6), (0.2, 0.3), (0.5, 0.15), (1.0, 0.0))
    assert knee_point(points, MIN[:2]) == 2


def test_knee_with_mixed_directions_and_scale() -> None:
    points = [
        {"accuracy": 0.99, "flops": 1000.0},
        {"accuracy": 0.98, "flops": 300.0},  # the compromise
        {"accuracy": 0.90, "flops": 100.0},
    ]
    assert knee_point(points, ["accuracy", "flops"]) == 1


def test_knee_scales_by_the_front_range_not_all_points() -> None:
    # over the front, (0.5, 0.4) is closest (0.64 vs 1); if the dominated (0.2, 5.0) stretched the
    # second objective's range to [0, 5], (0.0, 1.0) would be closest instead
    points = pts((0.0, 1.0), (0.5, 0.4), (1.0, 0.0), (0.2, 5.0))
    assert knee_point(points, MIN[:2]) == 1


def test_knee_ties_go_to_the_lowest_index() -> None:
    assert knee_point(pts((1.0, 0.0), (0.0, 1.0)), MIN[:2]) == 0
    assert knee_point(pts((0.0, 1.0), (0.4, 0.4), (1.0, 0.0), (0.4, 0.4)), MIN[:2]) == 1


def test_knee_is_a_front_member() -> None:
    # the front is one point, so every rescaled value is 0; the dominated point 0 must not win
    assert knee_point(pts((0.5, 0.9), (0.5, 0.8)), MIN[:2]) == 1
    assert knee_point(pts((0.3, 0.3)), MIN[:2]) == 0
    with pytest.raises(ConfigError):
        knee_point([], MIN[:2])
