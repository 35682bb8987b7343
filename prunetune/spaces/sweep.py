"""`SweepSpace`: one target swept on a grid (the `uniform`, `global` and `sensitivity` baselines).

Each trial picks one target from `grid`; the strategy's `allocate(target)` turns it into per-group
ratios (prunetune.search.strategies), which are clamped to each group's range. The trial is then
fine-tuned, measured, stored and logged exactly like any other. A grid sampler walks the targets
without repeating one (`SweepSampler`); the space is `exhausted` once every target has its trial,
whatever `--trials` says. Bit-widths are not swept: every quantizable layer keeps the space's
first choice; importance is the space's first criterion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import optuna

from prunetune.compress import CompressionConfig
from prunetune.spaces.space import SearchSpace


class SweepSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler without its `study.stop()` at the end of the grid (that call only works
    inside `study.optimize`, and prunetune's runners ask and tell): the runners stop themselves
    when the space says it is `exhausted`."""

    def after_trial(self, study, trial, state, values) -> None:  # noqa: ARG002
        return None


@dataclass
class SweepSpace:
    """A one-parameter space `target:<strategy>` over `grid`, decoded by `allocate` into a
    CompressionConfig over `inner`'s groups (a prunetune.spaces.protocol.Space). Allocations are
    computed once per target and cached."""

    strategy: str
    inner: SearchSpace
    grid: list[float]
    allocate: Callable[[float], dict[str, float]]
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def param(self) -> str:
        return f"target:{self.strategy}"

    @property
    def quant_layers(self) -> list[str]:
        return self.inner.quant_layers

    def suggest(self, trial) -> dict:
        step = self.inner.ratio_step
        return {self.param: trial.suggest_float(self.param, self.grid[0], self.grid[-1], step=step)}

    def warm_start(self) -> list[dict]:
        """None: the sweep is the whole plan."""
        return []

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """The grid sampler (seeded: targets in random order, none twice)."""
        return SweepSampler({self.param: self.grid}, seed=seed)

    def exhausted(self, study: optuna.Study) -> bool:
        """True when every target has a finished or running trial."""
        seen = {
            round(float(t.params[self.param]), 6)
            for t in study.get_trials(deepcopy=False)
            if self.param in t.params
            and not t.user_attrs.get("interrupted")
            and t.state != optuna.trial.TrialState.WAITING
        }
        return all(g in seen for g in self.grid)

    def decode(self, params: dict) -> CompressionConfig:
        target = round(float(params[self.param]), 6)
        if target not in self._cache:
            self._cache[target] = self._clamped(self.allocate(target))
        ratios = {n: g.low for n, g in self.inner.groups.items()} | self._cache[target]
        return CompressionConfig(
            ratios=ratios,
            bits={n: self.inner.bits[0] for n in self.quant_layers},
            importance=self.inner.importance[0],
            round_to=self.inner.round_to,
        )

    def _clamped(self, raw: dict[str, float]) -> dict[str, float]:
        searched = [n for n, g in self.inner.groups.items() if g.high > 0.0]
        return {
            n: round(
                min(max(raw.get(n, 0.0), self.inner.groups[n].low), self.inner.groups[n].high), 6
            )
            for n in searched
        }

    def summary(self) -> dict:
        return {
            **self.inner.summary(),
            "strategy": self.strategy,
            "ratio_dims": 1,
            "bits_dims": 0,
            "targets": len(self.grid),
        }

    def to_dict(self) -> dict:
        return self.inner.to_dict()

    def fingerprint(self) -> str:
        return self.inner.fingerprint()
