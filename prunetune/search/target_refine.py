"""Targets that follow accuracy: where the default targets' front drops steeply, one more target;
which targets score near chance; where the default pick is decided. (Pure: the planner,
prunetune.search.targets, reads the study and acts on these.)

The default targets are a fixed 1-2-5 series of fractions of the base's MACs (0.5, 0.2, 0.1, ...).
On a net that loses much accuracy between two of them (or between the base and the lightest), the
front is a coarse staircase exactly where a sweep of uniform ratios has many configs, and the
front's hypervolume is lost there (RegNetX-400MF on mnist5k: 62 % of validation accuracy at 0.5 of
the base's MACs against the base's 92 %, nothing in between; bench/results/deep_search_unseen.md).

Once the baselines of every planned target have finished, `refinement` looks at the best accuracy
found at each target, with the base itself as the point at 1.0, and finds the neighbouring pair
whose gap could hold the most hypervolume: (width in MACs fraction) x (accuracy step) / base
accuracy. When that is at least REFINE_GAIN, a round target between them (PREFERRED: the one
nearest their geometric mean) is added to the plan, with its own baselines (the global ranking's
late) and searched candidates like any target. At most MAX_REFINED are added per search, and
only to the default targets (targets a user gave are kept as given). On a net that keeps its
accuracy across the series (mnist_net, and the zoo nets with `--ratio-min 0.7`, whose lightest
target is the lightest the space allows) no gap reaches REFINE_GAIN and the plan is the series
alone.
"""

from __future__ import annotations

import math

# round fractions of the base's MACs a refined target is taken from: 1-1.5-2-3-5-7 per decade, and
# 0.85, 0.6 and 0.4 where a net that is sensitive to pruning keeps most of its accuracy and a
# sweep of uniform ratios has most of its configs
PREFERRED = (0.85, 0.6, 0.4) + tuple(
    round(m * 10.0**-e, 6) for e in range(1, 5) for m in (7.0, 5.0, 3.0, 2.0, 1.5, 1.0)
)
REFINE_GAIN = 0.02  # the least hypervolume (normalised by the base) a gap must be able to hold
MAX_REFINED = 5
SPACING = 1.1  # a refined target is at least 10 % away (in MACs) from its neighbours
REFINED_KEY = "refined_targets"  # the full study's user attr listing the targets added


def near_chance_below(base_accuracy: float, num_classes: int) -> float:
    """The accuracy below which a config scores near chance: a quarter of the way from chance
    (1 / `num_classes`) to the base's accuracy. There the brief fine-tune cannot rank configs."""
    chance = 1.0 / num_classes
    return chance + 0.25 * (base_accuracy - chance)


def near_chance_targets(
    best: dict[float, float], base_accuracy: float | None, num_classes: int | None
) -> set[float]:
    """The targets whose best accuracy (`best`: target -> accuracy) is near chance
    (`near_chance_below`); none when the base's accuracy or the number of classes is unknown."""
    if not base_accuracy or not num_classes:
        return set()
    floor = near_chance_below(float(base_accuracy), int(num_classes))
    return {t for t, accuracy in best.items() if accuracy < floor}


def pick_frontier(
    best: dict[float, float], targets: list[float], base_accuracy: float | None, max_drop: float
) -> float | None:
    """The target of `targets` just cheaper than the cheapest whose best accuracy is within
    `max_drop` of `base_accuracy`: where the default pick (the fewest MACs within that drop) is
    decided, so where a better config moves it. None when none is within, or the cheapest is."""
    if not base_accuracy:
        return None
    within = [t for t in targets if best.get(t, 0.0) >= base_accuracy - max_drop]
    cheaper = [t for t in targets if within and t < min(within)]
    return max(cheaper) if cheaper else None


def gap_gain(upper: tuple[float, float], lower: tuple[float, float], base: float) -> float:
    """The hypervolume (MACs fraction x accuracy / `base`) a target between two front points
    (MACs fraction, accuracy) could add at most: the rectangle between their staircase steps."""
    return (upper[0] - lower[0]) * max(upper[1] - lower[1], 0.0) / base


def refinement(best: dict[float, float], base_accuracy: float, lightest: float) -> float | None:
    """The target to add to a plan whose targets scored `best` (target -> best validation
    accuracy), or None: a PREFERRED fraction inside the widest-gaining gap between neighbours
    (the base as the point (1.0, `base_accuracy`)) when that gap's `gap_gain` is >= REFINE_GAIN,
    no lighter than `lightest` (the lightest fraction the space allows) and SPACING away from both
    neighbours."""
    if base_accuracy <= 0 or not best:
        return None
    points = [(1.0, base_accuracy)] + sorted(best.items(), reverse=True)
    gaps = []
    for upper, lower in zip(points, points[1:]):
        gain = gap_gain(upper, lower, base_accuracy)
        inside = [
            p
            for p in PREFERRED
            if lower[0] * SPACING < p < upper[0] / SPACING and p <= lightest / SPACING
        ]
        if gain >= REFINE_GAIN and inside:
            middle = math.sqrt(upper[0] * lower[0])
            gaps.append((gain, min(inside, key=lambda p: abs(math.log(p / middle)))))
    return max(gaps)[1] if gaps else None
