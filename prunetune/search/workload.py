"""Workloads: what a trial does with data once the model is compressed -- fine-tune it, re-estimate
its batch norms, score it (validation; a cheap screening score; test for the front).

Two kinds, one contract (`Workload`):
- `DatasetWorkload`: the CLI's. A prunetune data set (`prunetune.data`) and the fixed recipe of the
  search config (Adam, cross-entropy, a class-balanced subset per trial, optional distillation).
- `UserWorkload`: the Python API's (`prunetune.run_search`). The user's own `train_fn(model)` and
  `eval_fn(model) -> {"accuracy": ..., ...}` (and optionally `test_fn`); prunetune never sees the
  data.

Every method leaves the model on the CPU in eval mode (the runners, FPS and saved weights expect
it there). Seeds are the trial's (see objective.trial_seed).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import nn
from torch.utils.data import Subset

from prunetune import threads
from prunetune.data import BalancedSubsetSampler, DataBundle
from prunetune.errors import PrunetuneError
from prunetune.models import Recipe, evaluate, pruned_lr, recalibrate_bn, train
from prunetune.search.records import reserved_name

RECALIBRATION_IMAGES = (
    1000  # batch-norm statistics after fine-tuning (models without batch norms skip it)
)
SCREEN_IMAGES = 300  # screening: batch-norm statistics re-estimated on this many training images
SCREEN_VAL_IMAGES = 500  # ... and accuracy on (at most) this many validation images
IMPORTANCE_PER_CLASS = 8  # images per class for data-driven importance criteria (taylor)
CALIBRATION_BATCHES = 8  # int8 calibration: this many batches of 16 training images


class Workload(Protocol):
    """What the trial pipeline needs from data. `label` names the data in records and files."""

    label: str
    num_classes: int | None

    def finetune(self, model: nn.Module, seed: int, device: str, kept: float = 1.0) -> list[float]:
        """Fine-tune in place; the loss per epoch (may be empty). `kept`: the fraction of the
        base's MACs the model kept (the built-in fine-tune scales its learning rate by it)."""

    def recalibrate(self, model: nn.Module, seed: int, device: str) -> bool:
        """Re-estimate batch-norm statistics after fine-tuning; whether anything was done."""

    def evaluate(self, model: nn.Module, device: str) -> dict[str, float]:
        """Validation metrics, "accuracy" among them (what the search selects on)."""

    def screen(
        self, model: nn.Module, seed: int, device: str, kept: float = 1.0
    ) -> dict[str, float]:
        """The cheap fidelity of screening: metrics of the compressed model without fine-tuning
        (or after a few steps; `kept` as in finetune)."""

    def test_accuracy(self, model: nn.Module) -> float | None:
        """Held-out accuracy of a front member (None: the workload has no test data)."""

    def importance_data(self, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Batches for data-driven importance criteria (None: data-free criteria only)."""

    def calibration_batches(self, seed: int) -> list[torch.Tensor] | None:
        """Input batches for int8 calibration (None: int8 runtimes unavailable)."""


def recalibration_sampler(
    bundle: DataBundle, seed: int, images: int = RECALIBRATION_IMAGES
) -> BalancedSubsetSampler:
    """The class-balanced training images (about `images` of them) on which the batch-norm
    statistics of the model fine-tuned with `seed` are re-estimated: a draw of its own."""
    return BalancedSubsetSampler(
        bundle.train_targets, per_class=max(1, images // bundle.num_classes), seed=seed + 1
    )


def calibration_batches(bundle: DataBundle, seed: int) -> list[torch.Tensor]:
    """CALIBRATION_BATCHES seeded batches of 16 training images (int8 calibration)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(bundle.train), generator=g)[: CALIBRATION_BATCHES * 16]
    xs = torch.stack([bundle.train[int(i)][0] for i in idx])
    return list(xs.split(16))


@dataclass
class DatasetWorkload:
    """A prunetune data set with the search config's recipe: fine-tune `epochs` x `subset`
    class-balanced training images (Adam `lr`, distilled from `teacher` when `distill` > 0),
    batch norms re-estimated on up to RECALIBRATION_IMAGES training images, scored on `val`.
    `train_threads` ("auto", a count, None: torch's as they are): the fine-tune's thread policy
    (prunetune.threads); re-estimation, scoring and screening use its latest decision."""

    bundle: DataBundle
    epochs: int
    subset: int
    lr: float
    batch_size: int
    distill: float = 0.0
    teacher: nn.Module | None = None
    proxy_steps: int = 0
    lr_scaling: float = 0.0
    train_threads: int | str | None = None

    @property
    def label(self) -> str:
        return self.bundle.name

    @property
    def num_classes(self) -> int:
        return self.bundle.num_classes

    def _per_class(self) -> int:
        """Images per class of one brief fine-tune epoch."""
        return max(1, self.subset // self.bundle.num_classes)

    def lr_for(self, kept: float) -> float:
        """The brief fine-tune's learning rate for a model that kept `kept` of the base's MACs
        (pruned_lr over this fine-tune's steps); the proxy's steps use the same rate."""
        images = self._per_class() * self.bundle.num_classes
        steps = self.epochs * math.ceil(images / self.batch_size)
        return pruned_lr(self.lr, kept, self.lr_scaling, steps)

    def finetune(self, model: nn.Module, seed: int, device: str, kept: float = 1.0) -> list[float]:
        if self.epochs == 0:
            return []
        sampler = BalancedSubsetSampler(
            self.bundle.train_targets, per_class=self._per_class(), seed=seed
        )
        recipe = Recipe(
            epochs=self.epochs,
            lr=self.lr_for(kept),
            batch_size=self.batch_size,
            distill_alpha=self.distill,
        )
        hist = train(
            model,
            self.bundle.train,
            recipe,
            seed=seed,
            sampler=sampler,
            device=device,
            teacher=self.teacher if self.distill > 0 else None,
            train_threads=self.train_threads,
        )
        return hist.loss

    def recalibrate(self, model: nn.Module, seed: int, device: str) -> bool:
        sampler = recalibration_sampler(self.bundle, seed, min(self.subset, RECALIBRATION_IMAGES))
        with threads.decided(self.train_threads):
            return bool(
                recalibrate_bn(
                    model,
                    self.bundle.train,
                    sampler=sampler,
                    batch_size=self.batch_size,
                    device=device,
                )
            )

    def evaluate(self, model: nn.Module, device: str) -> dict[str, float]:
        with threads.decided(self.train_threads):
            return {"accuracy": evaluate(model, self.bundle.val, device=device)["accuracy"]}

    def screen(
        self, model: nn.Module, seed: int, device: str, kept: float = 1.0
    ) -> dict[str, float]:
        """The proxy: `proxy_steps` fine-tune steps (none when 0; at the brief fine-tune's learning
        rate) on images of their own, batch norms re-estimated on SCREEN_IMAGES, accuracy on
        SCREEN_VAL_IMAGES validation images."""
        if self.proxy_steps > 0:
            images = self.proxy_steps * self.batch_size
            per_class = max(1, images // self.bundle.num_classes)
            proxy = BalancedSubsetSampler(self.bundle.train_targets, per_class=per_class, seed=seed)
            train(
                model,
                self.bundle.train,
                Recipe(epochs=1, lr=self.lr_for(kept), batch_size=self.batch_size),
                seed=seed,
                sampler=proxy,
                device=device,
                train_threads=self.train_threads,
            )
        val = Subset(self.bundle.val, range(min(SCREEN_VAL_IMAGES, len(self.bundle.val))))
        sampler = recalibration_sampler(self.bundle, seed, SCREEN_IMAGES)
        with threads.decided(self.train_threads):
            recalibrate_bn(
                model, self.bundle.train, sampler=sampler, batch_size=self.batch_size, device=device
            )
            return {"accuracy": evaluate(model, val, device=device)["accuracy"]}

    def test_accuracy(self, model: nn.Module) -> float | None:
        return evaluate(model, self.bundle.test, device="cpu")["accuracy"]

    def importance_data(self, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        sampler = BalancedSubsetSampler(
            self.bundle.train_targets, per_class=IMPORTANCE_PER_CLASS, seed=seed
        )
        idx = list(sampler)
        xs = torch.stack([self.bundle.train[i][0] for i in idx])
        ys = torch.stack([torch.as_tensor(self.bundle.train[i][1]) for i in idx])
        return list(zip(xs.split(32), ys.split(32)))

    def calibration_batches(self, seed: int) -> list[torch.Tensor]:
        return calibration_batches(self.bundle, seed)


class UserFunctionError(PrunetuneError):
    """A user's train_fn / eval_fn / test_fn raised or returned something unusable (the trial fails
    with this as its reason; the search goes on)."""


@dataclass
class UserWorkload:
    """The user's own loop. `train_fn(model) -> None` fine-tunes in place; `eval_fn(model) ->
    dict[str, float]` must include "accuracy" (a fraction); `test_fn`, shaped like `eval_fn`, scores
    front members on held-out data (optional). They may move the model to any device; it is moved
    back to the CPU afterwards. Screening scores with `eval_fn` without fine-tuning. No data goes
    through prunetune, so data-driven importance criteria and int8 calibration are unavailable."""

    train_fn: Callable[[nn.Module], object]
    eval_fn: Callable[[nn.Module], dict]
    test_fn: Callable[[nn.Module], dict] | None = None
    label: str = "user"
    num_classes: int | None = None

    def finetune(
        self,
        model: nn.Module,
        seed: int,
        device: str,  # noqa: ARG002
        kept: float = 1.0,  # noqa: ARG002 - the user's train_fn has its own recipe
    ) -> list[float]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            returned = _call("train_fn", self.train_fn, model)
        if isinstance(returned, nn.Module) and returned is not model:
            raise UserFunctionError(
                "train_fn returned another module: it must fine-tune the model it is given in "
                "place (return None)"
            )
        model.cpu().eval()
        return []

    def recalibrate(self, model: nn.Module, seed: int, device: str) -> bool:  # noqa: ARG002
        return False  # the user's train_fn leaves its model as it wants it

    def evaluate(self, model: nn.Module, device: str) -> dict[str, float]:  # noqa: ARG002
        return metrics_of("eval_fn", self.eval_fn, model)

    def screen(
        self,
        model: nn.Module,
        seed: int,  # noqa: ARG002
        device: str,  # noqa: ARG002
        kept: float = 1.0,  # noqa: ARG002
    ) -> dict[str, float]:
        return metrics_of("eval_fn", self.eval_fn, model)

    def test_accuracy(self, model: nn.Module) -> float | None:
        return (
            None if self.test_fn is None else metrics_of("test_fn", self.test_fn, model)["accuracy"]
        )

    def importance_data(self, seed: int) -> None:  # noqa: ARG002
        return None

    def calibration_batches(self, seed: int) -> None:  # noqa: ARG002
        return None


def _call(name: str, fn: Callable, model: nn.Module):
    """fn(model); any exception, and sys.exit, becomes a UserFunctionError naming `name`
    (KeyboardInterrupt passes)."""
    try:
        return fn(model)
    except SystemExit as exc:  # sys.exit in a user's loop fails the trial, never the process
        raise UserFunctionError(f"{name} called sys.exit({exc.code!r:.100})") from None
    except Exception as exc:  # noqa: BLE001 - the user's code: its failure fails the trial
        raise UserFunctionError(f"{name} raised {type(exc).__name__}: {str(exc)[:300]}") from exc


METRIC_NAME = re.compile(
    r"[A-Za-z0-9_.-]{1,100}"
)  # what MLflow takes as a metric name, ':' and '/' aside


def metrics_of(name: str, fn: Callable, model: nn.Module) -> dict[str, float]:
    """The metrics `fn(model)` returns, checked: a mapping of names (letters, digits, '_', '.', '-';
    none that prunetune's own record uses, records.reserved_name) to finite numbers, with
    "accuracy" among
    them as a fraction in [0, 1]. The model is back on the CPU in eval mode afterwards."""
    out = _call(name, fn, model)
    model.cpu().eval()
    if not isinstance(out, dict) or "accuracy" not in out:
        raise UserFunctionError(
            f"{name} must return a dict with an 'accuracy' entry, got {out!r:.200}"
        )
    clash = sorted(str(k) for k in out if isinstance(k, str) and reserved_name(k))
    if clash:
        raise UserFunctionError(
            f"{name} returned {', '.join(map(repr, clash))}: a name "
            f"prunetune's own "
            "record uses (measured metrics, threads, runtime, device, "
            "timings, time_*, "
            "base_*, state, ...); name your metric otherwise"
        )
    bad = sorted(repr(k) for k in out if not isinstance(k, str) or not METRIC_NAME.fullmatch(k))
    if bad:
        raise UserFunctionError(
            f"{name}'s metric names must be 1-100 letters, digits, '_', '.' or '-', got "
            f"{', '.join(bad)}"
        )
    metrics = {}
    for key, value in out.items():
        try:
            number = float(value)
        except OverflowError:  # an int beyond any float (10**400): not a measurement
            raise UserFunctionError(f"{name}'s metric {key!r} is too large for a float") from None
        except (TypeError, ValueError):
            raise UserFunctionError(
                f"{name}'s metric {key!r} is not a number: {value!r:.80}"
            ) from None
        if not math.isfinite(number):
            raise UserFunctionError(f"{name}'s metric {key!r} is not finite: {number}")
        metrics[str(key)] = number
    if not 0.0 <= metrics["accuracy"] <= 1.0:
        raise UserFunctionError(
            f"{name}'s accuracy must be a fraction in [0, 1], got {metrics['accuracy']}"
        )
    return metrics
