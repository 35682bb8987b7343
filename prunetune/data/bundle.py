"""DataBundle: the train / val / test splits of one dataset, plus what a model needs to know."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset


class NormalizedTensorDataset(Dataset):
    """Images kept as a uint8 or float tensor (N, C, H, W); normalised per item on access."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: tuple[float, ...],
                 std: tuple[float, ...], scale: float = 255.0) -> None:
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
        return {"dataset": self.name, "train": len(self.train), "val": len(self.val),
                "test": len(self.test), "input_shape": list(self.input_shape),
                "num_classes": self.num_classes}


def stratified_split(labels: torch.Tensor, sizes: tuple[int, int, int], seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded split of indices into three parts of the given sizes, each with the class mix of
    the whole (up to rounding)."""
    total = sum(sizes)
    if total > len(labels):
        raise ValueError(f"split sizes {sizes} exceed {len(labels)} samples")
    g = torch.Generator().manual_seed(seed)
    parts: list[list[int]] = [[], [], []]
    classes = torch.unique(labels)
    for c in classes:
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        share = len(idx) / len(labels)
        start = 0
        for k, size in enumerate(sizes):
            n = int(round(size * share))
            parts[k].extend(idx[start:start + n].tolist())
            start += n
    out = []
    for k, size in enumerate(sizes):
        p = torch.tensor(parts[k], dtype=torch.long)
        p = p[torch.randperm(len(p), generator=g)][:size]
        out.append(p)
    return out[0], out[1], out[2]
