"""Cost targets met by construction: per-group allocations scaled onto a MACs target.

The `targets` strategy builds the front target by target. A candidate at a target `t` (a fraction
of the base model's MACs) is an *allocation*: one number a_d in [-1, 1] per ratio dimension d
(which dimensions keep more or fewer channels than the others). Dimension d keeps the fraction

    k_d(s) = clamp(s * exp(GAMMA * a_d), 1 - high_d, 1 - low_d)

of its channels, and the one scalar s is solved by bisection so that the pruned model's MACs,
channel rounding included, lie in [t * (1 - TOLERANCE), t] x the base's MACs: every candidate at a
target costs the same, and candidates are compared at equal cost (as EagleEye, MetaPruning and
AMC compare them), never spread over the cost axis by chance. The allocation 0 everywhere is the
uniform config at `t`.

MACs come from a `CostModel`, exact for Conv2d/Linear layers (the MACs prunetune counts): a
layer's MACs are its base MACs times (kept / channels)^e for every group that prunes its inputs
or outputs, e measured once per model by pruning each group alone (prunetune.spaces.cost_model).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from prunetune.compress import CompressionConfig
from prunetune.config import check_targets
from prunetune.errors import ConfigError
from prunetune.spaces.cost_model import CostModel, cost_model
from prunetune.spaces.space import OverSearchSpace, SearchSpace

GAMMA = math.log(4.0)  # an allocation of +-1 keeps 4x more / fewer channels than the scale s
TOLERANCE = 0.02  # a candidate's MACs lie in [t * (1 - TOLERANCE), t] x base MACs
TARGET = "target"
ALLOC = "alloc:"
SERIES = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)  # default targets (1-2-5 series)


def default_targets(cheapest: float, lightest: float) -> list[float]:
    """The SERIES values strictly between the cheapest and the lightest fraction of the base's
    MACs a space allows (the cheapest itself left out: every allocation is the same there),
    lightest first, led by the lightest itself when the space starts well below the base's MACs
    (ratios from --ratio-min up) and the series' first value is far below it; at least one target
    (the middle, geometrically) when none falls between."""
    inside = [t for t in SERIES if cheapest * (1 + 2 * TOLERANCE) < t < lightest * (1 - TOLERANCE)]
    if lightest < 0.75 and (not inside or inside[0] < lightest / 1.25):
        inside.insert(0, round(lightest * (1 - TOLERANCE / 2), 4))
    return inside or [round(math.sqrt(cheapest * lightest), 6)]


@dataclass
class TargetSpace(OverSearchSpace):
    """`inner`'s groups searched as allocations at MACs targets (see the module docstring).

    A full trial's params are explicit: `target` plus `ratio:<dim>` (the solved ratios) and the
    inner space's bits and importance; the planner (prunetune.search.targets) enqueues them, so a
    full trial is never sampled. Candidates (the planner's screening studies) are `alloc:<dim>`
    plus bits and importance, turned into ratios by `solve` at a target."""

    inner: SearchSpace
    cost: CostModel
    targets: list[float]
    _solved: dict = field(default_factory=dict, repr=False)

    def dims(self) -> dict[str, tuple[list[str], float, float]]:
        """Ratio dimension -> (its groups, lowest ratio, highest ratio)."""
        out = {}
        for dim, members in self.inner.ratio_dims().items():
            low = max(self.inner.groups[m].low for m in members)
            high = min(self.inner.groups[m].high for m in members)
            out[dim] = (members, low, max(low, high))
        return out

    def group_ratios(self, dim_ratios: dict[str, float]) -> dict[str, float]:
        """Per-group ratios of per-dimension ratios (fixed groups at their lowest ratio)."""
        ratios = {n: g.low for n, g in self.inner.groups.items()}
        for dim, (members, _, _) in self.dims().items():
            for m in members:
                ratios[m] = dim_ratios.get(dim, ratios[m])
        return ratios

    def macs_fraction(self, dim_ratios: dict[str, float]) -> float:
        return self.cost.macs(self.group_ratios(dim_ratios)) / self.cost.total

    def bounds(self) -> tuple[float, float]:
        """(cheapest, lightest): the fractions of the base's MACs with every dimension at its
        highest ratio, and at its lowest."""
        dims = self.dims()
        cheapest = self.macs_fraction({d: high for d, (_, _, high) in dims.items()})
        return cheapest, self.macs_fraction({d: low for d, (_, low, _) in dims.items()})

    def _at_scale(self, alloc: dict[str, float], scale: float) -> dict[str, float]:
        out = {}
        for dim, (_, low, high) in self.dims().items():
            keep = min(max(scale * math.exp(GAMMA * alloc.get(dim, 0.0)), 1.0 - high), 1.0 - low)
            out[dim] = round(min(max(1.0 - keep, low), high), 6)
        return out

    def solve(self, alloc: dict[str, float], target: float) -> dict[str, float] | None:
        """Per-dimension ratios of allocation `alloc` scaled onto `target`: the largest scale whose
        MACs are <= target (bisection in log space); None when those MACs fall below the
        tolerance window (channel rounding or the ratio ranges jump over it)."""
        key = (tuple(sorted(alloc.items())), target)
        if key not in self._solved:
            goal = target * self.cost.total
            low, high = math.log(1e-4), math.log(1e4)
            if self.cost.macs(self.group_ratios(self._at_scale(alloc, math.exp(low)))) > goal:
                self._solved[key] = None
                return None
            for _ in range(60):
                mid = (low + high) / 2
                fits = (
                    self.cost.macs(self.group_ratios(self._at_scale(alloc, math.exp(mid)))) <= goal
                )
                low, high = (mid, high) if fits else (low, mid)
            ratios = self._filled(self._at_scale(alloc, math.exp(low)), goal)
            ok = self.macs_fraction(ratios) >= target * (1 - TOLERANCE)
            self._solved[key] = ratios if ok else None
        return self._solved[key]

    def _filled(self, ratios: dict[str, float], goal: float) -> dict[str, float]:
        """`ratios` with channels given back one at a time while the MACs stay <= `goal`: each step
        the dimension whose next channel costs least (channel rounding makes the scale's MACs a
        staircase whose steps can be wider than the tolerance window)."""
        ratios = dict(ratios)
        floor_ = goal * (1 - TOLERANCE)
        while self.cost.macs(self.group_ratios(ratios)) < floor_:
            best = None
            for dim, (members, low, _) in self.dims().items():
                step = 1.0 / max(self.inner.groups[m].channels for m in members)
                wider = dict(ratios, **{dim: round(max(ratios[dim] - step, low), 6)})
                macs = self.cost.macs(self.group_ratios(wider))
                if wider[dim] < ratios[dim] and macs <= goal and (best is None or macs < best[0]):
                    best = (macs, wider)
            if best is None:
                break
            ratios = best[1]
        return ratios

    def allocation_of(self, dim_ratios: dict[str, float]) -> dict[str, float]:
        """The allocation whose shape is that of `dim_ratios` (kept fractions relative to their
        geometric mean), unbounded: solving it at any target keeps the ratios' shape."""
        keeps = {d: max(1.0 - r, 1e-6) for d, r in dim_ratios.items()}
        if not keeps:
            return {}
        centre = sum(math.log(k) for k in keeps.values()) / len(keeps)
        return {d: (math.log(k) - centre) / GAMMA for d, k in keeps.items()}

    def suggest(self, trial) -> dict:
        """A full trial's params (the planner enqueued their values; see the class docstring)."""
        params: dict = {TARGET: trial.suggest_float(TARGET, 0.0, 1.0)}
        for dim, (_, low, high) in self.dims().items():
            name = f"ratio:{dim}"
            params[name] = trial.suggest_float(name, low, high) if high > low else low
        return params | self.suggest_rest(trial)

    def suggest_rest(self, trial) -> dict:
        """The inner space's bits and importance choices."""
        return self.inner.suggest_choices(trial)

    def suggest_candidate(self, trial) -> dict:
        """A candidate's params: one allocation per ratio dimension, bits and importance."""
        params = {ALLOC + dim: trial.suggest_float(ALLOC + dim, -1.0, 1.0) for dim in self.dims()}
        return params | self.suggest_rest(trial)

    def candidate_params(self, candidate: dict, target: float) -> dict | None:
        """The full trial's params of a candidate at `target` (None: it cannot meet the target)."""
        alloc = {k[len(ALLOC) :]: float(v) for k, v in candidate.items() if k.startswith(ALLOC)}
        ratios = self.solve(alloc, target)
        if ratios is None:
            return None
        rest = {k: v for k, v in candidate.items() if not k.startswith(ALLOC)}
        return {TARGET: target, **{f"ratio:{d}": r for d, r in ratios.items()}, **rest}

    def decode(self, params: dict) -> CompressionConfig:
        """A full trial's or a candidate's params (with `target`) as a CompressionConfig."""
        if any(k.startswith(ALLOC) for k in params):
            solved = self.candidate_params(params, float(params[TARGET]))
            if solved is None:
                raise ConfigError(
                    f"allocation cannot meet target {params[TARGET]:g} of the base's MACs"
                )
            params = solved
        rest = {k: v for k, v in params.items() if k != TARGET}
        return self.inner.decode(rest)

    def warm_start(self) -> list[dict]:
        """None: the planner enqueues every full trial."""
        return []

    def sampler(self, seed: int) -> None:  # noqa: ARG002
        """None: every full trial is enqueued by the planner (the sampler never samples)."""
        return None

    def exhausted(self, study) -> bool:  # noqa: ARG002
        """Never: the planner cycles over the targets until the budget or the timeout."""
        return False

    def summary(self) -> dict:
        return {
            **self.inner.summary(),
            "strategy": "targets",
            "targets": list(self.targets),
            "tolerance": TOLERANCE,
        }

    def to_dict(self) -> dict:
        return self.inner.to_dict()

    def fingerprint(self) -> str:
        """Another space than the inner one, and one per target list (a study keeps one plan)."""
        text = f"targets:{GAMMA}:{TOLERANCE}:{self.targets}:{self.inner.fingerprint()}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_target_space(
    space: SearchSpace, model: nn.Module, example: torch.Tensor, inv, targets: list[float] | None
) -> TargetSpace:
    """The TargetSpace of `space` for `model`: its cost model probed, and `targets` (fractions of
    the base's MACs; None: default_targets over what the space allows). ConfigError for a target
    the space cannot reach."""
    groups = {g.name: (g.channels, g.divisor) for g in inv.groups if g.name in space.groups}
    cost = cost_model(model, example, groups, space.round_to)
    cheapest, lightest = TargetSpace(space, cost, []).bounds()
    chosen = (
        default_targets(cheapest, lightest) if targets is None else check_targets(list(targets))
    )
    out = [t for t in chosen if not cheapest * (1 - TOLERANCE) <= t <= lightest]
    if out:
        raise ConfigError(
            f"target {out[0]:g} is outside what the space allows: {cheapest:.4g} (every "
            f"group at its highest ratio) to {lightest:.4g} of the base's MACs"
        )
    return TargetSpace(space, cost, chosen)
