"""Compressed-model files: base reference + config + state_dict, loadable with weights_only=True.

A pruned model cannot be rebuilt from its state_dict alone (its layer widths changed) and a whole
pickled module does not load with `torch.load(weights_only=True)`. So the file stores plain data:
which base model (zoo name, input shape, number of classes), the CompressionConfig, the caller's
metadata and the weights. Loading rebuilds the base model, replays `compress` (the structure
depends only on the config) and loads the weights, reproducing the saved model's outputs exactly.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from prunetune.compress.config import CompressionConfig, compress
from prunetune.errors import CheckpointError, ConfigError, PrunetuneError
from prunetune.models.checkpoint import build_for, load_into

FORMAT = "prunetune-compressed/1"
BASE_KEYS = ("model", "input_shape", "num_classes")
REPLAY_IMPORTANCE = "l1"  # data-free and cheap; which channels it picks is irrelevant on replay


def save_compressed(path: str | Path, model: nn.Module, config: CompressionConfig, base: Mapping, *,
                    meta: Mapping | None = None) -> Path:
    """Write `model` (the result of `compress(build_for(base["model"], base["input_shape"],
    base["num_classes"]), config, ...)`, possibly fine-tuned) to `path` atomically (temp file +
    rename). `base`: the base reference, with "model" (a name `build_for` knows), "input_shape"
    (C, H, W) and "num_classes", plus any JSON-able keys of the caller's (dataset, checkpoint,
    ...); `meta`: more JSON-able data. ConfigError if either is incomplete or not JSON-able."""
    base = dict(base)
    if missing := [k for k in BASE_KEYS if k not in base]:
        raise ConfigError(f"the base reference of a compressed model needs {', '.join(missing)}")
    try:
        base["input_shape"] = [int(s) for s in base["input_shape"]]
        base["num_classes"] = int(base["num_classes"])
        json.dumps([base, meta or {}])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"compressed-model base reference and metadata must be JSON-able: {exc}") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "base": base, "config": config.as_dict(), "meta": dict(meta or {}),
               "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_compressed_file(path: str | Path) -> tuple[nn.Module, dict]:
    """(model in eval mode, header) of a file written by `save_compressed`. The header holds
    "format", "base" (the base reference as saved), "config" (a CompressionConfig as dict) and
    "meta". The global RNG state is left as it was. CheckpointError if the file is missing, corrupt, of another format, or its weights do
    not fit the rebuilt model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"compressed model {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, foreign pickle, not a torch file
        raise CheckpointError(f"cannot read compressed model {str(path)!r}: {type(exc).__name__}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a prunetune compressed model ({FORMAT})")
    state = obj.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(path)!r} holds no state_dict")
    try:
        base, config = obj["base"], CompressionConfig.from_dict(obj["config"])
        shape, num_classes = tuple(base["input_shape"]), base["num_classes"]
        replay = dataclasses.replace(config, importance=REPLAY_IMPORTANCE)
        with torch.random.fork_rng(devices=[]):  # the throw-away init must not move the caller's RNG
            model = compress(build_for(base["model"], shape, num_classes), replay, torch.zeros(1, *shape))
    except (KeyError, TypeError, PrunetuneError) as exc:
        raise CheckpointError(f"cannot rebuild the model of {str(path)!r}: {exc}") from None
    load_into(model, state, str(path))
    return model, {k: v for k, v in obj.items() if k != "state_dict"}
