"""Class-balanced subsets (prunetune.data.sampling): counts, seeds, a new subset per epoch."""

from __future__ import annotations

import pytest
import torch

from prunetune.data import BalancedSubsetSampler, balanced_indices

TARGETS = torch.tensor([0] * 30 + [1] * 25 + [2] * 4 + [3] * 40)[
    torch.randperm(99, generator=torch.Generator().manual_seed(0))
]


def test_balanced_indices_counts():
    idx = balanced_indices(TARGETS, 10, seed=0)
    assert len(idx) == len(set(idx.tolist())) == 34
    assert int(idx.min()) >= 0 and int(idx.max()) < len(TARGETS)
    assert torch.bincount(TARGETS[idx]).tolist() == [10, 10, 4, 10]  # all of the small class
    assert torch.bincount(TARGETS[balanced_indices(TARGETS, 1, seed=2)]).tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError):
        balanced_indices(TARGETS, 0, seed=0)


def test_balanced_indices_seeded():
    a, b = balanced_indices(TARGETS, 10, seed=5), balanced_indices(TARGETS, 10, seed=5)
    assert torch.equal(a, b)
    subsets = {tuple(sorted(balanced_indices(TARGETS, 10, seed=s).tolist())) for s in range(5)}
    assert len(subsets) == 5  # a new subset for each seed
    # the order is shuffled, not grouped by class
    assert TARGETS[a].tolist() != sorted(TARGETS[a].tolist())


def epoch_subset(sampler: BalancedSubsetSampler, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    out = list(sampler)
    assert len(out) == len(sampler) == len(set(out))
    return out


def test_sampler_new_subset_every_epoch():
    sampler = BalancedSubsetSampler(TARGETS, 10, seed=3)
    assert len(sampler) == 34
    draws = [epoch_subset(sampler, e) for e in range(4)]
    for d in draws:
        assert torch.bincount(TARGETS[d]).tolist() == [10, 10, 4, 10]
    assert len({tuple(sorted(d)) for d in draws}) == 4
    assert epoch_subset(sampler, 2) == draws[2]  # deterministic in (seed, epoch)
    other_seed = BalancedSubsetSampler(TARGETS, 10, seed=4)
    assert epoch_subset(other_seed, 0) != draws[0]


def test_sampler_keeps_subset_for_refresh_every_epochs():
    sampler = BalancedSubsetSampler(TARGETS, 5, seed=1, refresh_every=3)
    draws = [epoch_subset(sampler, e) for e in range(7)]
    assert draws[0] == draws[1] == draws[2]
    assert draws[3] == draws[4] == draws[5]
    assert sorted(draws[3]) != sorted(draws[0]) and sorted(draws[6]) != sorted(draws[3])
    assert len(sampler) == 5 + 5 + 4 + 5
    assert len(BalancedSubsetSampler(TARGETS, 100)) == 99  # every class smaller than per_class
    assert BalancedSubsetSampler(TARGETS, 5, refresh_every=0).refresh_every == 1


def test_sampler_drives_a_dataloader():
    bundle_like = torch.utils.data.TensorDataset(torch.arange(len(TARGETS)), TARGETS)
    sampler = BalancedSubsetSampler(TARGETS, 3, seed=0)
    loader = torch.utils.data.DataLoader(bundle_like, batch_size=4, sampler=sampler)
    sampler.set_epoch(1)
    got = torch.cat([x for x, _ in loader]).tolist()
    assert got == list(sampler) and len(got) == 12
