"""Training and evaluation loops shared by base training and per-trial fine-tuning."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from prunetune import interrupts
from prunetune.data.bundle import NormalizedTensorDataset


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class DivergedError(RuntimeError):
    """Training produced a non-finite loss."""


@dataclass(frozen=True)
class Recipe:
    """How to train: Adam with a cosine schedule; optional distillation from a teacher."""

    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    distill_alpha: float = 0.0  # weight of the KL term towards the teacher (0 = off)
    distill_temperature: float = 4.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TrainHistory:
    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _loader(ds: Dataset, batch_size: int, *, sampler: Sampler | None = None, shuffle: bool = False,
            generator: torch.Generator | None = None) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, shuffle=shuffle and sampler is None,
                      generator=generator, num_workers=0)


def _make_optimizer(model: nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    try:  # fused Adam is ~2x faster on CPU for the big linear layers; not on every build/device
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def train(model: nn.Module, train_set: Dataset, recipe: Recipe, *, seed: int,
          sampler: Sampler | None = None, teacher: nn.Module | None = None,
          device: torch.device | None = None) -> TrainHistory:
    """Train in place for `recipe.epochs` epochs; returns the mean loss per epoch.

    With a `sampler` exposing `set_epoch`, every epoch draws its own subset. Deterministic on CPU
    for a given seed. Raises DivergedError when the loss becomes NaN or infinite."""
    import time

    device = device or default_device()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    opt = _make_optimizer(model, recipe, device)
    steps_per_epoch = max(1, math.ceil((len(sampler) if sampler is not None else len(train_set))
                                       / recipe.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.epochs * steps_per_epoch)
    hist, start = TrainHistory(), time.perf_counter()
    for epoch in range(recipe.epochs):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        total, n = 0.0, 0
        for x, y in _loader(train_set, recipe.batch_size, sampler=sampler, shuffle=True, generator=g):
            interrupts.check()
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss = F.cross_entropy(out, y)
            if teacher is not None and recipe.distill_alpha > 0:
                t = recipe.distill_temperature
                with torch.no_grad():
                    soft = F.softmax(teacher(x) / t, dim=1)
                kd = F.kl_div(F.log_softmax(out / t, dim=1), soft, reduction="batchmean") * t * t
                loss = (1 - recipe.distill_alpha) * loss + recipe.distill_alpha * kd
            if not torch.isfinite(loss):
                raise DivergedError(f"loss became {loss.item()} in epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(y)
            n += len(y)
        hist.loss.append(total / max(n, 1))
    hist.seconds = time.perf_counter() - start
    model.eval()
    return hist


@torch.no_grad()
def recalibrate_bn(model: nn.Module, dataset: Dataset, *, sampler: Sampler, batch_size: int = 64,
                   device: torch.device | None = None) -> int:
    """Re-estimate every batch norm's running mean and variance from the images `sampler` picks
    (plain average over them; weights untouched), then leave the model in eval mode. After
    channels are removed and a handful of fine-tuning steps, the running statistics no longer
    match the activations, and a model with batch norms can score chance in eval mode while its
    weights are fine (resnet18 pruned 50 %, 8 fine-tune steps: 10 % -> 94 % on mnist5k). Returns
    how many batch norms were recalibrated (0: nothing to do, no forward pass run)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    device = device or default_device()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    model.to(device).train()
    try:
        for x, _ in _loader(dataset, batch_size, sampler=sampler):
            interrupts.check()
            model(x.to(device))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return len(norms)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 500,
             device: torch.device | None = None) -> dict[str, float]:
    """Top-1 accuracy (and top-5 when there are more than 10 classes) as fractions in [0, 1]."""
    device = device or default_device()
    model.to(device).eval()
    correct1 = correct5 = n = 0
    for x, y in _batches(dataset, batch_size):
        out = model(x.to(device))
        y = y.to(device)
        correct1 += (out.argmax(1) == y).sum().item()
        if out.shape[1] > 10:
            correct5 += (out.topk(5, dim=1).indices == y[:, None]).any(1).sum().item()
        n += len(y)
    result = {"accuracy": correct1 / max(n, 1)}
    if correct5:
        result["top5_accuracy"] = correct5 / n
    return result


def _batches(dataset: Dataset, batch_size: int):
    if isinstance(dataset, NormalizedTensorDataset):
        x, y = dataset.tensors()
        for i in range(0, len(y), batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
    else:
        yield from _loader(dataset, batch_size)
