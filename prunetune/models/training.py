"""Training and evaluation loops shared by base training and per-trial fine-tuning."""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from prunetune import interrupts, threads
from prunetune.config import DEVICE_PATTERN
from prunetune.data.bundle import NormalizedTensorDataset
from prunetune.errors import ConfigError


def resolve_device(spec: str = "auto") -> torch.device:
    """The one device a search (or `prunetune train`) trains and evaluates on: "auto" is CUDA
    device 0 when torch sees one, else the CPU; "cpu"; "cuda" (= cuda:0) or "cuda:N". Raises
    ConfigError (one line) for another name, or when CUDA (device N) is not available here."""
    if not re.fullmatch(DEVICE_PATTERN, spec):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if spec == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    index = int(spec.partition(":")[2] or 0)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        seen = (
            f"{count} CUDA device(s)"
            if count
            else "no CUDA device (torch.cuda.is_available() is False)"
        )
        raise ConfigError(
            f"--device {spec} requested, but torch sees {seen} here; use --device cpu or auto"
        )
    return torch.device("cuda", index)


def _as_device(device: torch.device | str) -> torch.device:
    """`device` as a torch.device with an explicit CUDA index (so equal devices compare equal)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def device_of(model: nn.Module) -> torch.device:
    """Where a model's first parameter (or buffer) lives; the CPU for a model with neither."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if first is None else first.device


@contextlib.contextmanager
def _moved_to(model: nn.Module, device: torch.device) -> Iterator[None]:
    """`model` on `device` inside the block, back where it was afterwards (also on errors)."""
    home = device_of(model)
    model.to(device)
    try:
        yield
    finally:
        model.to(home)


def _teacher_on(teacher: nn.Module, device: torch.device) -> nn.Module:
    """The teacher to distill from on `device`, in eval mode: `teacher` itself when it is already
    there and in eval mode, else a copy (the caller's model, often the shared base model, is never
    moved or switched to eval)."""
    if device_of(teacher) == device and not teacher.training:
        return teacher
    return copy.deepcopy(teacher).to(device).eval()


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


LR_BOOST_BELOW = 0.25  # pruned_lr raises the learning rate of models that kept less of the MACs
MAX_LR_BOOST = 10.0  # ... by at most this factor, and at most sqrt(steps)


def pruned_lr(lr: float, kept: float, scaling: float, steps: int) -> float:
    """The learning rate of a `steps`-step fine-tune of a model that kept the fraction `kept` of
    its base's MACs: `lr` down to a quarter of the MACs, below it `lr * (0.25 / kept) ** scaling`,
    at most sqrt(steps) x and 10x `lr` (`scaling` 0: `lr` for every model). The more a net was
    pruned, the further its weights must move from the base's in a brief fine-tune; the fewer
    the steps, the less of a large rate the cosine schedule can anneal away (bench/results/
    finetune_lr*.md, uniform configs at 5 % of the MACs: mnist_net, 120 steps, 94.6 % test at 10x
    against 91.8 % at 1x; resnet18 at 120 steps equal at 3x and 10x; at 16 steps both nets are
    best near 3x and lose 1-10 points at 10x)."""
    if kept >= LR_BOOST_BELOW or scaling == 0:
        return lr
    cap = min(MAX_LR_BOOST, max(1.0, math.sqrt(steps)))
    return lr * min(cap, (LR_BOOST_BELOW / max(kept, 1e-9)) ** scaling)


@dataclass
class TrainHistory:
    """Mean loss per epoch, wall seconds, and the run's thread decision (prunetune.threads)."""

    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    threads: threads.Decision | None = None


def _loader(
    ds: Dataset,
    batch_size: int,
    *,
    sampler: Sampler | None = None,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> DataLoader:
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=shuffle and sampler is None,
        generator=generator,
        num_workers=0,
    )


def _make_optimizer(
    model: nn.Module, recipe: Recipe, device: torch.device
) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    try:  # fused Adam is ~2x faster on CPU for the big linear layers; not on every build/device
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def train(
    model: nn.Module,
    train_set: Dataset,
    recipe: Recipe,
    *,
    seed: int,
    sampler: Sampler | None = None,
    teacher: nn.Module | None = None,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, float, float], None] | None = None,
    train_threads: int | str | None = None,
) -> TrainHistory:
    """Train in place for `recipe.epochs` epochs on `device`; returns the mean loss per epoch. The
    model is back on the device it was on when this returns (or raises), in eval mode; `teacher`
    is never moved or modified (see `_teacher_on`). `train_threads`: torch's intra-op threads on
    the CPU, "auto" (measured in the run's first steps, see prunetune.threads), a count, or None
    (torch's as they are); torch's setting is restored afterwards.

    With a `sampler` exposing `set_epoch`, every epoch draws its own subset. Deterministic on CPU
    for a given seed. Raises DivergedError when the loss becomes NaN or infinite. `on_epoch(epoch,
    loss, seconds)` is called after each epoch (1-based; the mean loss; seconds since the start)."""
    device = _as_device(device)
    if teacher is not None:
        teacher = _teacher_on(teacher, device)
    with _moved_to(model, device):
        try:
            return _train_epochs(
                model,
                train_set,
                recipe,
                seed=seed,
                sampler=sampler,
                teacher=teacher,
                device=device,
                on_epoch=on_epoch,
                train_threads=train_threads,
            )
        finally:
            model.eval()


def _train_epochs(
    model: nn.Module,
    train_set: Dataset,
    recipe: Recipe,
    *,
    seed: int,
    sampler: Sampler | None,
    teacher: nn.Module | None,
    device: torch.device,
    on_epoch: Callable[[int, float, float], None] | None = None,
    train_threads: int | str | None = None,
) -> TrainHistory:
    """The loop of `train`, with the model and teacher already on `device`."""
    import time

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model.train()
    opt = _make_optimizer(model, recipe, device)
    steps_per_epoch = max(
        1, math.ceil((len(sampler) if sampler is not None else len(train_set)) / recipe.batch_size)
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.epochs * steps_per_epoch)
    chooser = threads.ThreadChooser(
        train_threads, steps=recipe.epochs * steps_per_epoch, probe=device.type == "cpu"
    )
    hist, start = TrainHistory(), time.perf_counter()
    with chooser.running():
        for epoch in range(recipe.epochs):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            total, n = 0.0, 0
            for x, y in _loader(
                train_set, recipe.batch_size, sampler=sampler, shuffle=True, generator=g
            ):
                interrupts.check()
                with chooser.step():
                    loss = _step(model, x.to(device), y.to(device), opt, recipe, teacher, epoch)
                sched.step()
                total += loss * len(y)
                n += len(y)
            hist.loss.append(total / max(n, 1))
            if on_epoch is not None:
                on_epoch(epoch + 1, hist.loss[-1], time.perf_counter() - start)
    hist.seconds, hist.threads = time.perf_counter() - start, chooser.decision
    return hist


def _step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    opt: torch.optim.Optimizer,
    recipe: Recipe,
    teacher: nn.Module | None,
    epoch: int,
) -> float:
    """One optimizer step on (x, y), distilled from `teacher` when the recipe says; the loss.
    Raises DivergedError for a non-finite loss."""
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
    return loss.item()


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    dataset: Dataset,
    *,
    sampler: Sampler,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> int:
    """Re-estimate every batch norm's running mean and variance from the images `sampler` picks
    (plain average over them; weights untouched), then leave the model in eval mode. After
    channels are removed and a handful of fine-tuning steps, the running statistics no longer
    match the activations, and a model with batch norms can score chance in eval mode while its
    weights are fine (resnet18 pruned 50 %, 8 fine-tune steps: 10 % -> 94 % on mnist5k). Returns
    how many batch norms were recalibrated (0: nothing to do, no forward pass run). The forward
    passes run on `device`; the model is back where it was afterwards."""
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms:
        return 0
    device = _as_device(device)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    with _moved_to(model, device), _restored(norms, momenta, model):
        model.train()
        for x, _ in _loader(dataset, batch_size, sampler=sampler):
            interrupts.check()
            model(x.to(device))
    return len(norms)


@contextlib.contextmanager
def _restored(norms: list[nn.Module], momenta: list, model: nn.Module) -> Iterator[None]:
    """After the block (also on errors): the batch norms' momenta back, the model in eval mode."""
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 500, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Top-1 accuracy (and top-5 when there are more than 10 classes) as fractions in [0, 1],
    computed on `device` in eval mode; the model is back where it was afterwards (in eval mode)."""
    device = _as_device(device)
    correct1 = correct5 = n = 0
    with _moved_to(model, device):
        model.eval()
        for x, y in batches(dataset, batch_size):
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


def batches(dataset: Dataset, batch_size: int):
    """(x, y) batches of `dataset` in order (whole tensors sliced for in-memory sets)."""
    if isinstance(dataset, NormalizedTensorDataset):
        x, y = dataset.tensors()
        for i in range(0, len(y), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
    else:
        yield from _loader(dataset, batch_size)
