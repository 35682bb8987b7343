"""Class-balanced subset sampling for brief fine-tuning (N images per class, seeded,
refreshable)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def balanced_indices(targets: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """`per_class` indices of every class (all of a class when it has fewer), seeded, shuffled."""
    if per_class < 1:
        raise ValueError("per_class must be >= 1")
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(targets):
        idx = torch.nonzero(targets == c).flatten()
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    out = torch.cat(chosen)
    return out[torch.randperm(len(out), generator=g)]


class BalancedSubsetSampler(Sampler[int]):
    """Yields a class-balanced subset of the training set; a new subset is drawn every
    `refresh_every` epochs (call `set_epoch` before each epoch). Deterministic in (seed, epoch)."""

    def __init__(
        self, targets: torch.Tensor, per_class: int, *, seed: int = 0, refresh_every: int = 1
    ) -> None:
        self.targets, self.per_class, self.seed = targets, per_class, seed
        self.refresh_every = max(1, refresh_every)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        draw = self.epoch // self.refresh_every
        return balanced_indices(self.targets, self.per_class, self.seed * 100_003 + draw)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        counts = torch.bincount(self.targets)
        return int(torch.clamp(counts[counts > 0], max=self.per_class).sum())
