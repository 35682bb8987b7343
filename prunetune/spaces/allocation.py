"""The "global level + per-group allocation" parametrization of a search space (AMC-style).

Per-group ratios sampled independently concentrate around the middle of their range (a mean of D
independent draws), so a 10-20 dimensional search rarely proposes the uniformly deep cuts that the
cheap end of the front (<= 2 % of the base's MACs) needs. Here a trial instead samples one `level`
(the MACs-weighted mean pruning ratio, on the space's ratio grid) and one `alloc:<dim>` in
[-1, 1] per ratio dimension (how much more or less than the level that dimension is pruned). The
allocations are centred (their MACs-weighted mean is removed), scaled by SPREAD and added to the
level, so every sampled config prunes about `level` of the MACs-weighted channels: to first order
its MACs are those of the uniform config at `level`, and a target is met by most configs instead
of by the few that happen to draw every group deep. Ratios are clamped to each group's range.
Bits and importance dimensions are the wrapped space's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from prunetune.compress import CompressionConfig
from prunetune.spaces.space import OverSearchSpace, SearchSpace

SPREAD = 0.15  # an allocation of +-1 (centred) moves a dimension's ratio this far from the level
ALLOC_STEP = 0.25  # allocations on a grid (TPE models discrete steps well; 9 values in [-1, 1])
LEVEL = "level"
ALLOC = "alloc:"


@dataclass
class AllocationSpace(OverSearchSpace):
    """`inner` re-parametrized as level + allocations (see the module docstring). Offers what the
    runners use of a space (prunetune.spaces.protocol.Space), and groups and ratio_step."""

    inner: SearchSpace

    def level_range(self) -> tuple[float, float]:
        """The level's range: the searched groups' lowest low to their highest high, on the grid."""
        searched = [g for g in self.inner.groups.values() if g.high > 0.0]
        low = min((g.low for g in searched), default=0.0)
        high = max((g.high for g in searched), default=0.0)
        step = self.inner.ratio_step
        return round(low, 6), round(low + int((high - low) / step + 1e-9) * step, 6)

    def _weights(self) -> dict[str, float]:
        """Each ratio dimension's weight: the MACs share of its groups (at least a tiny one)."""
        return {
            dim: max(sum(self.inner.groups[m].macs_share for m in members), 1e-6)
            for dim, members in self.inner.ratio_dims().items()
        }

    def suggest(self, trial) -> dict:
        low, high = self.level_range()
        params: dict = {
            LEVEL: trial.suggest_float(LEVEL, low, high, step=self.inner.ratio_step)
            if high > low
            else low
        }
        for dim in self.inner.ratio_dims():
            params[ALLOC + dim] = trial.suggest_float(ALLOC + dim, -1.0, 1.0, step=ALLOC_STEP)
        return params | self.inner.suggest_choices(trial)

    def ratios(self, params: dict) -> dict[str, float]:
        """The per-dimension ratios of a params dict (clamped to each dimension's range)."""
        weights = self._weights()
        allocs = {dim: float(params.get(ALLOC + dim, 0.0)) for dim in weights}
        centre = (
            sum(allocs[d] * w for d, w in weights.items()) / sum(weights.values())
            if weights
            else 0.0
        )
        level = float(params[LEVEL])
        out = {}
        for dim, members in self.inner.ratio_dims().items():
            low = max(self.inner.groups[m].low for m in members)
            high = min(self.inner.groups[m].high for m in members)
            out[dim] = round(min(max(level + SPREAD * (allocs[dim] - centre), low), high), 6)
        return out

    def decode(self, params: dict) -> CompressionConfig:
        ratio_params = {f"ratio:{dim}": r for dim, r in self.ratios(params).items()}
        rest = {k: v for k, v in params.items() if k != LEVEL and not k.startswith(ALLOC)}
        return self.inner.decode(rest | ratio_params)

    def warm_start(self) -> list[dict]:
        """The wrapped space's warm starts as levels with no allocation (uniform configs)."""
        low, high = self.level_range()
        seeds = []
        for seed in self.inner.warm_start():
            ratios = [v for k, v in seed.items() if k.startswith("ratio:")]
            p = {LEVEL: min(max(ratios[0] if ratios else low, low), high)}
            p |= {ALLOC + dim: 0.0 for dim in self.inner.ratio_dims()}
            p |= {k: v for k, v in seed.items() if not k.startswith("ratio:")}
            if p not in seeds:
                seeds.append(p)
        return seeds

    def sampler(self, seed: int) -> None:
        return self.inner.sampler(seed)

    def exhausted(self, study) -> bool:
        return self.inner.exhausted(study)

    def summary(self) -> dict:
        return {
            **self.inner.summary(),
            "parametrization": "allocation",
            "ratio_dims": 1 + len(self.inner.ratio_dims()),
        }

    def to_dict(self) -> dict:
        return self.inner.to_dict()

    def fingerprint(self) -> str:
        """Another space than the wrapped one (a study keeps one parametrization)."""
        return hashlib.sha256(
            f"allocation:{SPREAD}:{ALLOC_STEP}:{self.inner.fingerprint()}".encode()
        ).hexdigest()[:16]
