"""Base-model checkpoints: saved as plain tensors + metadata (loads with weights_only=True), and a
cache keyed by (model, dataset, seed, recipe) so searches reuse a trained base model."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from prunetune.data.bundle import DataBundle
from prunetune.errors import CheckpointError
from prunetune.models.factory import create_model
from prunetune.paths import check_home, check_writable_folder, probe_writable
from prunetune.models.training import Recipe, evaluate, train

FORMAT = "prunetune-base/1"


@dataclass
class BaseModel:
    """A trained base model and what is known about it."""

    model: nn.Module
    meta: dict
    path: Path | None


def build_for(
    model_name: str, bundle_or_shape: DataBundle | tuple, num_classes: int | None = None
) -> nn.Module:
    """An untrained model sized for a DataBundle, or for (C, H, W) + num_classes."""
    if isinstance(bundle_or_shape, DataBundle):
        shape, k = bundle_or_shape.input_shape, bundle_or_shape.num_classes
    else:
        shape, k = tuple(bundle_or_shape), int(num_classes)
    return create_model(
        model_name, in_channels=shape[0], num_classes=k, input_size=(shape[1], shape[2])
    )


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict) -> Path:
    """Write atomically (temp file + rename) so an interrupted save never leaves a broken file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, "meta": meta, "state_dict": sd}, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(meta, state_dict) of a prunetune checkpoint or of a plain state_dict file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle of arbitrary objects, not a torch file
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'}"
        ) from None
    if _is_state_dict(obj):
        return {}, obj
    if isinstance(obj, dict) and "format" in obj:
        return _checked_header(obj, str(path))
    raise CheckpointError(f"{str(path)!r} is neither a prunetune checkpoint nor a state_dict")


def _is_state_dict(obj: object) -> bool:
    """A non-empty dict of parameter names to tensors."""
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _checked_header(obj: dict, source: str) -> tuple[dict, dict]:
    """(meta, state_dict) of a file with a `format` key, or CheckpointError (one line) unless the
    format is FORMAT, `meta` a dict with string keys (`model` a string, `metrics` a dict of numbers,
    where present) and `state_dict` a state_dict."""
    if not isinstance(obj["format"], str) or obj["format"] != FORMAT:
        raise CheckpointError(
            f"checkpoint {source!r} has format {str(obj['format'])[:40]!r}; "
            f"this prunetune reads {FORMAT!r}"
        )
    meta, sd = obj.get("meta"), obj.get("state_dict")
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise CheckpointError(f"checkpoint {source!r} has no valid 'meta' mapping")
    if not isinstance(meta.get("model", ""), str):
        raise CheckpointError(f"checkpoint {source!r}: meta 'model' is not a name")
    metrics = meta.get("metrics", {})
    if not isinstance(metrics, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in metrics.values()
    ):
        raise CheckpointError(f"checkpoint {source!r}: meta 'metrics' is not a mapping of numbers")
    if not _is_state_dict(sd):
        raise CheckpointError(f"checkpoint {source!r} has no valid 'state_dict' (names to tensors)")
    return meta, sd


def load_into(model: nn.Module, state_dict: dict, source: str) -> nn.Module:
    """load_state_dict with a one-line error when the checkpoint belongs to another model."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise CheckpointError(
            f"checkpoint {source!r} does not fit this model ({detail[:160]})"
        ) from None
    return model.eval()


def cache_key(model_name: str, dataset: str, seed: int, recipe: Recipe) -> str:
    blob = json.dumps(
        {
            "model": model_name,
            "dataset": dataset,
            "seed": seed,
            "recipe": recipe.as_dict(),
            "format": FORMAT,
            "init": "seeded",
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _from_checkpoint(
    checkpoint: str | Path, model_name: str, bundle: DataBundle, device: torch.device | str
) -> BaseModel:
    """The base model of a given checkpoint file; its metrics measured now when the file has none.
    CheckpointError for a checkpoint of another model."""
    meta, sd = read_checkpoint(checkpoint)
    model = load_into(build_for(model_name, bundle), sd, str(checkpoint))
    if meta.get("model") not in (None, model_name):
        raise CheckpointError(
            f"checkpoint {str(checkpoint)!r} is of model {meta['model']!r}, not {model_name!r}"
        )
    if not {"val_accuracy", "test_accuracy"} <= set(meta.get("metrics", {})):
        meta = {
            **meta,
            "model": model_name,
            "dataset": bundle.name,
            "metrics": _metrics(model, bundle, device),
        }
    return BaseModel(model, meta, Path(checkpoint))


def _train_base(
    path: Path,
    model_name: str,
    bundle: DataBundle,
    recipe: Recipe,
    seed: int,
    *,
    log,
    device: torch.device | str,
    train_threads: int | str | None,
) -> BaseModel:
    """Train the base model from seeded initial weights and cache it at `path`."""
    with torch.random.fork_rng(devices=[]):  # the caller's RNG is left as it was
        torch.manual_seed(seed)  # the initial weights too: torch seeds itself at random at start-up
        model = build_for(model_name, bundle)
    epochs = f"{recipe.epochs} epoch{'s' if recipe.epochs != 1 else ''}"
    log(f"training base {model_name} on {bundle.name} for {epochs} (cached afterwards)")

    def progress(epoch: int, loss: float, seconds: float) -> None:  # a big model: minutes per epoch
        log(f"base epoch {epoch}/{recipe.epochs}: loss {loss:.4f} ({seconds:.0f} s)")

    hist = train(
        model,
        bundle.train,
        recipe,
        seed=seed,
        device=device,
        on_epoch=progress,
        train_threads=train_threads,
    )
    meta = {
        "model": model_name,
        "dataset": bundle.name,
        "input_shape": list(bundle.input_shape),
        "num_classes": bundle.num_classes,
        "seed": seed,
        "recipe": recipe.as_dict(),
        "train_loss": hist.loss,
        "train_seconds": hist.seconds,
        "train_threads": hist.threads.as_context() if hist.threads else None,
        "metrics": _metrics(model, bundle, device),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "torch": str(torch.__version__),
    }
    save_checkpoint(path, model, meta)
    return BaseModel(model, meta, path)


def get_base_model(
    model_name: str,
    bundle: DataBundle,
    *,
    recipe: Recipe,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    cache_dir: str | Path | None = None,
    log=lambda msg: None,
    device: torch.device | str = "cpu",
    train_threads: int | str | None = None,
) -> BaseModel:
    """The base model to compress: from `checkpoint` when given, else from the cache, else trained
    now (and cached). Metrics (val and test accuracy) are in `meta["metrics"]`. Training and those
    evaluations run on `device`; the model returned is always on the CPU. `train_threads`: see
    training.train (not part of the cache key; the decision is in `meta["train_threads"]`)."""
    if checkpoint is not None:
        return _from_checkpoint(checkpoint, model_name, bundle, device)
    cache = Path(cache_dir) if cache_dir else check_home() / "checkpoints"
    path = (
        cache / f"{model_name.replace(':', '_').replace('/', '_')}-{bundle.name}-"
        f"{cache_key(model_name, bundle.name, seed, recipe)}.pt"
    )
    if path.is_file():
        try:
            meta, sd = read_checkpoint(path)
            return BaseModel(load_into(build_for(model_name, bundle), sd, str(path)), meta, path)
        except CheckpointError as exc:
            log(f"ignoring broken cached checkpoint ({exc}); retraining")
    check_writable_folder(cache, "base model cache")  # before training, not after
    probe_writable(cache, "base model cache")
    return _train_base(
        path,
        model_name,
        bundle,
        recipe,
        seed,
        log=log,
        device=device,
        train_threads=train_threads,
    )


def _metrics(model: nn.Module, bundle: DataBundle, device: torch.device | str) -> dict:
    val, test = (
        evaluate(model, bundle.val, device=device),
        evaluate(model, bundle.test, device=device),
    )
    return {"val_" + k: v for k, v in val.items()} | {"test_" + k: v for k, v in test.items()}
