"""Targets that follow accuracy (prunetune.search.target_refine): where a refined target goes, and
where none does. (The planner adding it to a search: tests/search/test_targets.py.)"""

from __future__ import annotations

import pytest

from prunetune.search.target_refine import (
    PREFERRED,
    REFINE_GAIN,
    gap_gain,
    near_chance_targets,
    pick_frontier,
    refinement,
)

# validation accuracies of RegNetX-400MF's uniform baselines on mnist5k (base 92 %), and of
# mnist_net's best configs (base 95.7 %): bench/results/deep_search_unseen.md, the demo run
STEEP = {0.5: 0.62, 0.2: 0.31, 0.1: 0.20, 0.05: 0.17}
FLAT = {0.5: 0.955, 0.2: 0.95, 0.1: 0.948, 0.05: 0.94, 0.02: 0.90, 0.01: 0.88, 0.005: 0.80}


def test_the_gain_is_the_rectangle_between_two_steps_relative_to_the_base():
    assert gap_gain((1.0, 0.9), (0.5, 0.6), 0.9) == pytest.approx(0.5 * 0.3 / 0.9)
    assert gap_gain((0.5, 0.6), (0.2, 0.7), 0.9) == 0.0  # a lower step that scores higher


def test_a_steep_drop_below_the_base_adds_the_round_target_in_the_widest_gap():
    assert refinement(STEEP, 0.92, lightest=1.0) == 0.7  # base -> 0.5 holds the most
    assert refinement({0.7: 0.75, **STEEP}, 0.92, lightest=1.0) == 0.3  # then 0.5 -> 0.2
    steeper = {0.7: 0.73, 0.3: 0.5, **STEEP}
    assert refinement(steeper, 0.92, lightest=1.0) == 0.85  # then the base -> 0.7
    steeper |= {0.85: 0.83}
    assert refinement(steeper, 0.92, lightest=1.0) == 0.4  # then 0.5 -> 0.3
    assert refinement({**steeper, 0.4: 0.55}, 0.92, lightest=1.0) == 0.6  # then 0.7 -> 0.5


def test_a_front_that_keeps_its_accuracy_gets_no_target():
    assert refinement(FLAT, 0.957, lightest=1.0) is None
    assert refinement({}, 0.9, lightest=1.0) is None


def test_no_target_lighter_than_the_space_allows_nor_next_to_a_neighbour():
    # the zoo nets at --ratio-min 0.7: the lightest target is the lightest the space allows
    assert refinement({0.0892: 0.30, 0.05: 0.28}, 0.97, lightest=0.0901) is None
    assert gap_gain((0.5, 0.9), (0.45, 0.1), 0.9) > REFINE_GAIN  # steep, but no round value
    assert refinement({0.5: 0.9, 0.45: 0.1}, 0.9, lightest=1.0) is None  # 10 % from both


def test_refined_targets_are_round_fractions():
    assert {0.85, 0.7, 0.6, 0.4, 0.3, 0.15, 0.07, 0.03} <= set(PREFERRED)
    assert all(0 < p < 1 for p in PREFERRED)


def test_near_chance_is_a_quarter_of_the_way_from_chance_to_the_base():
    # base 0.908, 10 classes: below 0.1 + 0.25 x 0.808 = 0.302
    assert near_chance_targets(STEEP, 0.908, 10) == {0.1, 0.05}
    assert near_chance_targets(STEEP, None, 10) == set() == near_chance_targets(STEEP, 0.9, None)


def test_the_pick_is_decided_just_below_the_cheapest_target_within_the_drop():
    targets = sorted(FLAT, reverse=True)
    assert pick_frontier(FLAT, targets, 0.957, 0.01) == 0.05  # 0.1 is within 1 point
    assert pick_frontier(FLAT, targets, 0.957, 0.2) is None  # the cheapest is within
    assert pick_frontier(STEEP, sorted(STEEP, reverse=True), 0.92, 0.01) is None  # none within
