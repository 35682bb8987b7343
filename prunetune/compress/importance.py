"""Channel importance criteria, by name: `l1`, `l2`, `taylor`, `bn_scale`, `random`.

A criterion scores every channel of a pruning group (higher = more important); the pruner removes
the lowest-scored channels. Criteria never decide *how many* channels a group keeps (that depends
only on the ratios and rounding), only *which* ones.

Call order (as the pruner does it): `criterion = get_importance(name, seed=seed)`; if
`criterion.needs_gradients`, run `accumulate_gradients(model, data)` once on the unpruned model;
then `criterion(group, name)` for each torch-pruning group with all its channels.

Add a criterion with `@IMPORTANCES.register("name")` on a factory `(seed: int) -> Criterion`.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch_pruning as tp
from torch import nn

from prunetune.errors import ConfigError
from prunetune.registry import Registry

TAYLOR_BATCHES = 8  # batches of data the taylor criterion uses at most


class Criterion(Protocol):
    """Scores the channels of a torch-pruning group rooted at a layer's outputs."""

    needs_gradients: bool

    def __call__(self, group: tp.Group, name: str) -> torch.Tensor:
        """1-D float scores, one per channel of the group's root layer."""
        ...


IMPORTANCES: Registry[Callable[[int], Criterion]] = Registry("importance criterion")


def get_importance(name: str, *, seed: int = 0) -> Criterion:
    """The criterion registered as `name` (UnknownNameError lists the known ones)."""
    return IMPORTANCES.get(name)(seed)


@dataclass(frozen=True)
class TorchPruningCriterion:
    """A torch-pruning importance object; `fallback` scores groups the first one cannot (returns
    None for), e.g. groups without batch norm for `bn_scale`."""

    scorer: tp.importance.Importance
    fallback: tp.importance.Importance | None = None
    needs_gradients: bool = False

    def __call__(self, group: tp.Group, name: str) -> torch.Tensor:
        scores = self.scorer(group)
        if scores is None and self.fallback is not None:
            scores = self.fallback(group)
        if scores is None:  # no weighted layer in the group: keep the first channels
            return -torch.arange(len(group[0].idxs), dtype=torch.float32)
        return torch.nan_to_num(scores.detach().float().cpu(), nan=0.0)


@dataclass(frozen=True)
class RandomCriterion:
    """Uniform random scores from a generator seeded by (seed, group name), so a group's choice does
    not depend on which other groups are pruned or in what order (torch-pruning's
    RandomImportance draws from the global RNG instead)."""

    seed: int
    needs_gradients: bool = False

    def __call__(self, group: tp.Group, name: str) -> torch.Tensor:
        gen = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}:{name}".encode()))
        return torch.rand(len(group[0].idxs), generator=gen)


@IMPORTANCES.register("l1")
def l1(seed: int = 0) -> Criterion:
    """Filter L1 norm (Li et al. 2017), summed over every coupled layer of the group (the filter's
    own weights, the next layers' input weights and BN scales), torch-pruning's group magnitude."""
    return TorchPruningCriterion(tp.importance.GroupMagnitudeImportance(p=1))


@IMPORTANCES.register("l2")
def l2(seed: int = 0) -> Criterion:
    """Filter L2 norm (squared), group-wise like `l1`."""
    return TorchPruningCriterion(tp.importance.GroupMagnitudeImportance(p=2))


@IMPORTANCES.register("taylor")
def taylor(seed: int = 0) -> Criterion:
    """First-order Taylor expansion of the loss (Molchanov et al. 2017/2019): |w * dL/dw| summed
    per channel over the group. Needs gradients from `accumulate_gradients` (cross-entropy on a
    few labelled batches)."""
    return TorchPruningCriterion(tp.importance.GroupTaylorImportance(), needs_gradients=True)


@IMPORTANCES.register("bn_scale")
def bn_scale(seed: int = 0) -> Criterion:
    """|gamma| of the batch norms that follow the channels (network slimming, Liu et al. 2017);
    groups without batch norm fall back to `l1`."""
    return TorchPruningCriterion(
        tp.importance.BNScaleImportance(), fallback=tp.importance.GroupMagnitudeImportance(p=1)
    )


@IMPORTANCES.register("random")
def random_choice(seed: int = 0) -> Criterion:
    """Seeded random channel choice: the control every criterion should beat."""
    return RandomCriterion(seed)


def accumulate_gradients(
    model: nn.Module, data: Iterable | None, *, max_batches: int = TAYLOR_BATCHES
) -> int:
    """Sum cross-entropy gradients of up to `max_batches` (x, y) batches of `data` into the
    parameters' `.grad` (cleared first). Runs in eval mode, so batch-norm statistics are untouched;
    the model's mode is restored. Returns the number of batches used; ConfigError without data."""
    if data is None:
        raise ConfigError(
            "importance 'taylor' needs data: pass data=[(x, y), ...] (a few labelled batches)"
        )
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.grad = None
    used = 0
    try:
        with torch.enable_grad():
            for x, y in itertools.islice(data, max_batches):
                nn.functional.cross_entropy(model(x), y).backward()
                used += 1
    finally:
        model.train(was_training)
    if used == 0:
        raise ConfigError("importance 'taylor' needs at least one (x, y) batch of data")
    return used
