"""DataBundle: the train / val / test splits of one dataset, plus what a model needs to know."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset


class NormalizedTensorDataset(Dataset):
    """Images kept as a uint8 or float tensor (N, C, H, W); normalised per item on access."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        scale: float = 255.0,
    ) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError("images must be (N, C, H, W) with one label each")
        self.images, self.labels, self.scale = images, labels.long(), scale
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i].float() / self.scale
        return (x - self.mean) / self.std, self.labels[i]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images normalised at once (fast path for small in-memory sets)."""
        x = self.images.float() / self.scale
        return (x - self.mean) / self.std, self.labels


@dataclass(frozen=True)
class DataBundle:
    """One dataset, split. The search selects on `val`; final numbers are reported on `test`."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    train_targets: torch.Tensor
    input_shape: tuple[int, int, int]
    num_classes: int

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return torch.randn(batch_size, *self.input_shape)

    def summary(self) -> dict:
        return {
            "dataset": self.name,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
        }


def _apportion(quotas: list[float], capacity: list[int], size: int) -> list[int]:
    """Whole counts near `quotas` (largest remainder first), each within its capacity, summing
    to `size` (which must not exceed the total capacity)."""
    counts = [min(int(q), cap) for q, cap in zip(quotas, capacity)]
    order = sorted(range(len(quotas)), key=lambda c: (counts[c] - quotas[c], c))
    missing = size - sum(counts)
    while missing > 0:
        for c in order:
            if missing and counts[c] < capacity[c]:
                counts[c] += 1
                missing -= 1
    return counts


def stratified_split(
    labels: torch.Tensor, sizes: tuple[int, int, int], seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded split of indices into three disjoint parts of exactly the given sizes, each with
    the class mix of the whole (up to rounding)."""
    if min(sizes) < 0 or sum(sizes) > len(labels):
        raise ValueError(f"split sizes {sizes} exceed {len(labels)} samples")
    g = torch.Generator().manual_seed(seed)
    per_class = []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        per_class.append(idx[torch.randperm(len(idx), generator=g)])
    used = [0] * len(per_class)
    parts: list[list[int]] = [[], [], []]
    for k, size in enumerate(sizes):
        quotas = [size * len(idx) / len(labels) for idx in per_class]
        capacity = [len(idx) - u for idx, u in zip(per_class, used)]
        for c, n in enumerate(_apportion(quotas, capacity, size)):
            parts[k].extend(per_class[c][used[c] : used[c] + n].tolist())
            used[c] += n
    out = []
    for part in parts:
        p = torch.tensor(part, dtype=torch.long)
        out.append(p[torch.randperm(len(p), generator=g)])
    return out[0], out[1], out[2]
