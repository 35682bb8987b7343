"""Baseline strategies run through the search's own trial pipeline (`--strategy`).

`search` (the default) searches the space as it is. The others replace the space by a one-
parameter *sweep* (`SweepSpace`): each trial picks one target from a grid, the strategy turns it
into per-group ratios, and the trial is fine-tuned, measured, stored and logged exactly like a
search trial (same `run_trial`, same study, same MLflow runs). A grid sampler walks the targets
without repeating one (`SweepSampler`); the runner stops when every target has had its trial
(`exhausted`), whatever `--trials` says.

- `uniform`: the target is one ratio for every prunable group (clamped to each group's range).
- `global`: the target is torch-pruning's global pruning ratio: its pruner ranks the channels of
  all groups together (`global_pruning=True`, group L2 magnitude, per-group mean normalisation),
  so where a target lands is torch-pruning's decision; prunetune then removes those counts.
- `sensitivity`: the target is a mean ratio; each group's ratio is the target times a weight that
  is larger for groups whose accuracy drops less when pruned alone (`prunetune.sensitivity`),
  normalised so that the MACs-weighted mean of the weights is 1.

Bit-widths are not swept: every quantizable layer keeps the space's first choice (32 = float by
default). Importance is the space's first criterion.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import optuna
import torch
from torch import nn

from prunetune.compress import CompressionConfig
from prunetune.spaces import SearchSpace
from prunetune.spaces.allocation import AllocationSpace

SENSITIVITY_RATIOS = (0.5, 0.8)  # the scan behind `sensitivity`: each group alone at these ratios
SENSITIVITY_VAL_IMAGES = 250  # ... scored on this many validation images (no fine-tuning)


@dataclass
class SweepSpace:
    """A one-parameter space `target:<strategy>` over `grid`, decoded by the strategy into a
    CompressionConfig over the wrapped space's groups. Offers what the runners use of a
    SearchSpace (suggest, decode, warm_start, summary, to_dict, fingerprint,
    quant_layers). Holds the base model for strategies that look at it (global, sensitivity);
    allocations are computed once per target and cached."""

    strategy: str
    inner: SearchSpace
    grid: list[float]
    model: nn.Module | None = None
    example: torch.Tensor | None = None
    bundle: object | None = None
    _cache: dict = field(default_factory=dict, repr=False)
    _weights: dict | None = field(default=None, repr=False)

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

    def decode(self, params: dict) -> CompressionConfig:
        target = round(float(params[self.param]), 6)
        if target not in self._cache:
            self._cache[target] = self._allocate(target)
        ratios = {n: g.low for n, g in self.inner.groups.items()} | self._cache[target]
        return CompressionConfig(ratios=ratios, bits={n: self.inner.bits[0] for n in self.quant_layers},
                                 importance=self.inner.importance[0], round_to=self.inner.round_to)

    def _allocate(self, target: float) -> dict[str, float]:
        searched = [n for n, g in self.inner.groups.items() if g.high > 0.0]
        if self.strategy == "uniform":
            raw = {n: target for n in searched}
        elif self.strategy == "global":
            raw = global_ratios(self.model, self.example, self.inner, target)
        else:
            raw = {n: target * w for n, w in self.sensitivity_weights().items()}
        return {n: round(min(max(raw.get(n, 0.0), self.inner.groups[n].low), self.inner.groups[n].high), 6)
                for n in searched}

    def sensitivity_weights(self) -> dict[str, float]:
        """Per-group weights from the sensitivity scan (computed on first use)."""
        if self._weights is None:
            self._weights = sensitivity_weights(self.model, self.bundle, self.inner)
        return self._weights

    def summary(self) -> dict:
        return {**self.inner.summary(), "strategy": self.strategy, "ratio_dims": 1, "bits_dims": 0,
                "targets": len(self.grid)}

    def to_dict(self) -> dict:
        return self.inner.to_dict()

    def fingerprint(self) -> str:
        return self.inner.fingerprint()


class SweepSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler without its `study.stop()` at the end of the grid (that call only works
    inside `study.optimize`, and prunetune's runners ask and tell): the runners stop themselves
    when `exhausted` says so."""

    def after_trial(self, study, trial, state, values) -> None:  # noqa: ARG002
        return None


def make_space(cfg, space: SearchSpace, model: nn.Module, example: torch.Tensor, bundle):
    """The space of cfg.strategy: `space` itself for `search`, its TargetSpace for `targets`
    (prunetune.spaces.targets), else its SweepSpace over the ratio grid (multiples of the step
    from the groups' lowest ratio, above 0, to their highest)."""
    if cfg.strategy == "search":
        return AllocationSpace(space) if cfg.parametrization == "allocation" else space
    if cfg.strategy == "targets":
        from prunetune.compress import inventory
        from prunetune.spaces.targets import make_target_space

        return make_target_space(space, model, example, inventory(model, example), cfg.targets)
    searched = [g for g in space.groups.values() if g.high > 0.0]
    high = max((g.high for g in searched), default=0.0)
    low = min((g.low for g in searched), default=0.0)
    step = space.ratio_step
    first = max(1, math.ceil(low / step - 1e-9))  # targets from the ranges' lowest ratio (above 0)
    grid = [round(step * i, 6) for i in range(first, int(high / step + 1e-9) + 1)] or [0.0]
    return SweepSpace(cfg.strategy, space, grid, model=model, example=example, bundle=bundle)


def make_sampler(cfg, space) -> optuna.samplers.BaseSampler | None:
    """The grid sampler of a sweep (seeded; targets in random order, none twice), else None."""
    if not isinstance(space, SweepSpace):
        return None
    return SweepSampler({space.param: space.grid}, seed=cfg.seed)


def exhausted(space, study: optuna.Study) -> bool:
    """True when every target of a sweep has a finished or running trial (never for a search)."""
    if not isinstance(space, SweepSpace):
        return False
    seen = {round(float(t.params[space.param]), 6) for t in study.get_trials(deepcopy=False)
            if space.param in t.params and not t.user_attrs.get("interrupted")
            and t.state != optuna.trial.TrialState.WAITING}
    return all(g in seen for g in space.grid)


def global_ratios(model: nn.Module, example: torch.Tensor, space: SearchSpace, target: float) -> dict[str, float]:
    """Per-group ratios torch-pruning's global ranking gives at pruning ratio `target`: its
    MetaPruner with global_pruning=True on a copy of `model`, the layers prunetune leaves alone
    ignored, each group capped at the space's largest ratio."""
    import torch_pruning as tp

    from prunetune.compress.graph import analyse

    work = copy.deepcopy(model).eval()
    analysis = analyse(work, example)
    modules = dict(work.named_modules())
    prunable = {g.name for g in analysis.prunable if g.name in space.groups}
    ignored = [m for n, m in modules.items() if isinstance(m, nn.Conv2d | nn.Linear)
               and not any(n in g.out_layers for g in analysis.prunable if g.name in prunable)]
    before = {g.name: g.channels for g in analysis.prunable if g.name in prunable}
    p = 1 if space.importance[0] == "l1" else 2
    cap = max((space.groups[n].high for n in prunable), default=0.0)
    pruner = tp.pruner.MetaPruner(work, example, importance=tp.importance.GroupMagnitudeImportance(p=p),
                                  pruning_ratio=target, global_pruning=True, max_pruning_ratio=cap,
                                  ignored_layers=ignored)
    pruner.step()
    out = {}
    for name, channels in before.items():
        root = modules[name]
        kept = root.out_channels if isinstance(root, nn.Conv2d) else root.out_features
        out[name] = 1.0 - kept / channels
    return out


def sensitivity_weights(model: nn.Module, bundle, space: SearchSpace) -> dict[str, float]:
    """Weight per searched group: 1 / (mean accuracy drop when pruned alone + 0.01), scaled so the
    MACs-weighted mean weight is 1 (a target t then prunes about t of the MACs-weighted channels)."""
    from torch.utils.data import Subset

    from prunetune import sensitivity

    groups = [n for n, g in space.groups.items() if g.high > 0.0]
    val = Subset(bundle.val, range(min(SENSITIVITY_VAL_IMAGES, len(bundle.val))))
    rows = sensitivity.scan(model, _Bundle(bundle, val), groups, list(SENSITIVITY_RATIOS),
                            importance=space.importance[0])
    drop = {g: sum(max(r["drop"], 0.0) for r in rows if r["group"] == g) / len(SENSITIVITY_RATIOS)
            for g in groups}
    raw = {g: 1.0 / (drop[g] + 0.01) for g in groups}
    shares = {g: max(space.groups[g].macs_share, 1e-6) for g in groups}
    mean = sum(raw[g] * shares[g] for g in groups) / sum(shares.values())
    return {g: raw[g] / mean for g in groups}


class _Bundle:
    """A DataBundle seen through another validation split (the scan reads .val and example_input)."""

    def __init__(self, bundle, val) -> None:
        self._bundle, self.val = bundle, val

    def example_input(self, n: int) -> torch.Tensor:
        return self._bundle.example_input(n)
