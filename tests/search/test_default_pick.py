"""The default pick (issue 22): the cheapest front member within --max-drop of the base's
validation accuracy, else the knee; a pick near chance is said, never returned silently."""

from __future__ import annotations

from prunetune.search.records import COMPLETE, TrialRecord
from prunetune.search.results import SearchResult, default_pick, near_chance_pick, selected


def _result(
    points: list[tuple[float, int]],
    *,
    base: float = 0.95,
    knee: int = 0,
    max_drop: float | None = None,
    classes: int | None = 10,
) -> SearchResult:
    records = [
        TrialRecord(number=i, state=COMPLETE, params={}, metrics={"accuracy": a, "macs": m})
        for i, (a, m) in enumerate(points)
    ]
    config = {} if max_drop is None else {"max_drop": max_drop}
    result = SearchResult(
        study_name="s",
        objectives=["accuracy", "macs"],
        base_metrics={"accuracy": base},
        records=records,
        front=[r.number for r in records],
        knee=knee,
        config=config,
        num_classes=classes,
    )
    result.pick = default_pick(result)
    return result


def test_the_cheapest_member_within_the_drop_is_picked_not_the_knee():
    front = [(0.95, 1000), (0.945, 400), (0.941, 100), (0.90, 50), (0.12, 10)]
    result = _result(front, knee=3)
    assert result.pick == 2 and selected(result).number == 2  # 0.941 >= 0.95 - 0.01, fewest MACs
    assert _result(front, knee=3, max_drop=0.001).pick == 0
    assert _result(front, knee=3, max_drop=0.1).pick == 3
    assert near_chance_pick(result) is None


def test_a_near_chance_front_falls_back_to_the_knee_and_says_so():
    result = _result([(0.14, 100), (0.12, 10), (0.11, 5)], knee=1)
    assert result.pick == 1  # nothing within 1 point of 95 %: the knee
    warning = near_chance_pick(result)
    assert warning is not None and "near chance" in warning and "trial 1" in warning
    assert (
        near_chance_pick(_result([(0.14, 100)], classes=None)) is None
    )  # classes unknown: no claim


def test_a_select_rule_still_wins():
    result = _result([(0.95, 1000), (0.941, 100)])
    assert selected(result, "min macs").number == 1 and selected(result, "max accuracy").number == 0
