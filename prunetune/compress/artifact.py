"""Compressed-model files: base reference + config + state_dict, loadable with weights_only=True.

A pruned model cannot be rebuilt from its state_dict alone (its layer widths changed) and a whole
pickled module does not load with `torch.load(weights_only=True)`. So the file stores plain data:
which base model (zoo name, input shape, number of classes), the CompressionConfig, the caller's
metadata, the weights and the state_dict's per-module `_metadata` (layer versions some modules'
`_load_from_state_dict` needs, e.g. torchvision's MNASNet). Loading rebuilds the base model, replays
`compress` (the structure depends only on the config) and loads the weights, reproducing the saved
model's outputs exactly.

Loading is data-only: a file names its architecture, and only a registry name (zoo name,
`torchvision:NAME`, `timm:NAME`) is rebuilt on the file's word. A user architecture
(`package.module:function`) is imported and called only when the caller names the same one
(`load_compressed_file(path, model="pkg.mod:fn")`, `prunetune export --model`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from prunetune.compress.config import CompressionConfig, compress
from prunetune.errors import CheckpointError, ConfigError, PrunetuneError
from prunetune.models.checkpoint import build_for, load_into
from prunetune.models.registry import is_user_model

FORMAT = "prunetune-compressed/1"
BASE_KEYS = ("model", "input_shape", "num_classes")
REPLAY_IMPORTANCE = "l1"  # data-free and cheap; which channels it picks is irrelevant on replay
MAX_CHANNELS, MAX_SIDE, MAX_CLASSES = 64, 4096, 100_000  # sanity bounds of a file's base reference


def save_compressed(
    path: str | Path,
    model: nn.Module,
    config: CompressionConfig,
    base: Mapping,
    *,
    meta: Mapping | None = None,
) -> Path:
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
        raise ConfigError(
            f"compressed-model base reference and metadata must be JSON-able: {exc}"
        ) from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    payload = {
        "format": FORMAT,
        "base": base,
        "config": config.as_dict(),
        "meta": dict(meta or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in state.items()},
        "state_metadata": _plain_metadata(state),
    }
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _plain_metadata(state: Mapping) -> dict[str, dict]:
    """The state_dict's `_metadata` ({module prefix: {"version": ...}}) as plain JSON-able dicts
    (entries of other types are dropped), so the file still loads with weights_only=True."""
    plain = (str, int, float, bool, type(None))
    return {
        str(prefix): {str(k): v for k, v in entry.items() if isinstance(v, plain)}
        for prefix, entry in getattr(state, "_metadata", {}).items()
        if isinstance(entry, Mapping)
    }


def user_code_error(name: str) -> CheckpointError:
    """The one-line refusal to run user code a file (or stored study) names on its own."""
    return CheckpointError(
        f"this file was built from user code {name}; pass model={name!r} to rebuild it "
        f"(--model {name} on the command line)"
    )


def check_model_name(named: object, model: str | None) -> str:
    """`named` (the architecture a file or study names) if it may be rebuilt: a registry name, or
    the user architecture the caller named as `model`. CheckpointError otherwise."""
    if not isinstance(named, str) or not named:
        raise CheckpointError(f"the file names no architecture (model {named!r})")
    if model is not None and model != named:
        raise CheckpointError(f"this file was built from {named!r}, not from {model!r}")
    if is_user_model(named) and model != named:
        raise user_code_error(named)
    return named


def _base_reference(base: object, model: str | None) -> tuple[str, tuple[int, int, int], int]:
    """(architecture, (C, H, W), classes) of a file's base reference, type- and range-checked."""
    if not isinstance(base, Mapping):
        raise CheckpointError("its base reference is not a mapping")
    name = check_model_name(base.get("model"), model)
    shape, k = base.get("input_shape"), base.get("num_classes")
    ints = (
        isinstance(shape, list | tuple)
        and len(shape) == 3
        and all(isinstance(s, int) and not isinstance(s, bool) for s in shape)
    )
    if not ints or not (
        1 <= shape[0] <= MAX_CHANNELS and all(1 <= s <= MAX_SIDE for s in shape[1:])
    ):
        raise CheckpointError(
            f"its input_shape must be [C, H, W] (C <= {MAX_CHANNELS}, H, W <= {MAX_SIDE}), "
            f"got {shape!r:.80}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_CLASSES:
        raise CheckpointError(
            f"its num_classes must be an integer in [1, {MAX_CLASSES}], got {k!r:.80}"
        )
    return name, (shape[0], shape[1], shape[2]), k


def in_memory_base(
    ref: object, base_model: nn.Module | None, path: Path
) -> tuple[nn.Module, tuple[int, ...]]:
    """(a copy of `base_model`, input shape) for a file of a Python API search, whose base was the
    caller's in-memory model (base reference {"in_memory": true, "model": a label, "input_shape"}).
    CheckpointError without `base_model`, or for a file whose base is a registry architecture."""
    if not isinstance(ref, Mapping) or not ref.get("in_memory"):
        raise CheckpointError(
            f"{str(path)!r} was compressed from "
            f"{ref.get('model') if isinstance(ref, Mapping) else ref!r}, "
            "not from an in-memory model: load it without base_model"
        )
    if base_model is None:
        raise CheckpointError(
            f"{str(path)!r} was compressed from an in-memory model ({ref.get('model')}): pass that "
            "model as base_model to load it (or use the search result's model())"
        )
    shape = ref.get("input_shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(s, int) and s >= 1 for s in shape)
    ):
        raise CheckpointError(
            f"its input_shape must be a list of positive integers, got {shape!r:.80}"
        )
    return copy.deepcopy(base_model).cpu().eval(), tuple(shape)


def _read(path: Path) -> dict:
    """The file's payload, format-checked (CheckpointError otherwise)."""
    if not path.is_file():
        raise CheckpointError(f"compressed model {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, foreign pickle, not a torch file
        raise CheckpointError(
            f"cannot read compressed model {str(path)!r}: {type(exc).__name__}"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a prunetune compressed model ({FORMAT})")
    if not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(f"{str(path)!r} holds no state_dict")
    return obj


def _state_dict(obj: dict, fallback: Mapping) -> OrderedDict:
    """The saved weights with their `_metadata` (the rebuilt model's own for files saved before it
    was kept)."""
    state = OrderedDict(obj["state_dict"])
    saved = obj.get("state_metadata")
    meta = saved if isinstance(saved, dict) else getattr(fallback, "_metadata", {})
    state._metadata = OrderedDict((k, dict(v)) for k, v in meta.items() if isinstance(v, Mapping))  # type: ignore[attr-defined]
    return state


def load_compressed_file(
    path: str | Path, *, model: str | None = None, base_model: nn.Module | None = None
) -> tuple[nn.Module, dict]:
    """(model in eval mode, header) of a file written by `save_compressed`. The header holds
    "format", "base" (the base reference as saved), "config" (a CompressionConfig as dict) and
    "meta". The global RNG state is left as it was. `model`: the architecture the caller expects;
    needed (and must match) when the file was built from user code (`package.module:function`),
    which is never imported on the file's word. CheckpointError if the file is missing, corrupt, of
    another format or architecture, names user code the caller did not name, has a malformed header,
    or its weights do not fit the rebuilt model. `base_model`: the in-memory base a Python API
    search compressed (its files name no architecture to rebuild, see `in_memory_base`); it is
    copied, never changed."""
    path = Path(path)
    obj = _read(path)
    ref = obj.get("base")
    if base_model is not None or (isinstance(ref, Mapping) and ref.get("in_memory")):
        base, shape = in_memory_base(ref, base_model, path)
    try:
        if base_model is None:
            name, shape, num_classes = _base_reference(ref, model)
        config = CompressionConfig.from_dict(obj.get("config"))
        replay = dataclasses.replace(config, importance=REPLAY_IMPORTANCE)
        with torch.random.fork_rng(
            devices=[]
        ):  # the throw-away init must not move the caller's RNG
            if base_model is None:
                base = build_for(name, shape, num_classes)
            rebuilt = compress(base, replay, torch.zeros(1, *shape))
    except (KeyError, TypeError, ValueError, RuntimeError, PrunetuneError) as exc:
        raise CheckpointError(f"cannot rebuild the model of {str(path)!r}: {exc}") from None
    load_into(rebuilt, _state_dict(obj, rebuilt.state_dict()), str(path))
    return rebuilt, {k: v for k, v in obj.items() if k not in ("state_dict", "state_metadata")}
