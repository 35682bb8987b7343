"""A model's MACs as a function of its per-group pruning ratios, probed once and remembered.

`CostModel.probe` prunes every group of the model once to measure how each layer's MACs scale:
seconds on a deep net, paid before the first trial of every `targets` search. The result depends
only on the model's structure, so it is kept under prunetune's home folder
(`<home>/cost_models/<key>.json`) and read back by the next search on the same model. The key
hashes what the probe's result depends on: the model's printed structure, the example input's
shape, the groups (name, channels, divisor), the channel rounding and the per-layer MACs of the
base (one forward pass: a model whose forward changed shapes gets a new key). A cache file that
cannot be read, parsed or written is ignored: the model is probed again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from prunetune.compress.inventory import layer_macs
from prunetune.compress.prune import kept_channels, prune
from prunetune.paths import home_dir

FOLDER = "cost_models"
PROBE_RATIO = 0.5
VERSION = 1  # of the file layout and of what the probe measures; a new one ignores old files


@dataclass(frozen=True)
class CostModel:
    """MACs of a pruned model as a function of its per-group ratios (see module docstring).
    `terms`: (base MACs of a layer, ((group, exponent), ...)) for layers some group shrinks;
    `fixed`: MACs of the Conv2d/Linear layers no group touches."""

    total: int
    fixed: int
    terms: tuple[tuple[int, tuple[tuple[str, float], ...]], ...]
    channels: dict[str, int]
    divisors: dict[str, int]
    round_to: int = 1

    @classmethod
    def probe(
        cls,
        model: nn.Module,
        example: torch.Tensor,
        groups: dict[str, tuple[int, int]],
        round_to: int = 1,
    ) -> CostModel:
        """Measure the model: `groups` maps group name -> (channels, divisor). Each group is
        pruned alone (PROBE_RATIO) once and the per-layer MACs compared with the base's."""
        base = layer_macs(model, example)
        effects: dict[str, list[tuple[str, float]]] = {}
        for name, (channels, divisor) in groups.items():
            kept = kept_channels(channels, PROBE_RATIO, 1, divisor)
            if kept >= channels:
                continue
            pruned = layer_macs(prune(model, {name: PROBE_RATIO}, example), example)
            for layer, macs in base.items():
                after = pruned.get(layer, macs)
                if 0 < after < macs:
                    exponent = round(math.log(after / macs) / math.log(kept / channels))
                    effects.setdefault(layer, []).append((name, float(max(1, exponent))))
        terms = tuple((base[layer], tuple(effect)) for layer, effect in effects.items())
        fixed = sum(m for layer, m in base.items() if layer not in effects)
        return cls(
            total=sum(base.values()),
            fixed=fixed,
            terms=terms,
            channels={n: c for n, (c, _) in groups.items()},
            divisors={n: d for n, (_, d) in groups.items()},
            round_to=round_to,
        )

    def kept_fraction(self, group: str, ratio: float) -> float:
        channels = self.channels[group]
        return kept_channels(channels, ratio, self.round_to, self.divisors[group]) / channels

    def macs(self, ratios: dict[str, float]) -> int:
        """MACs of the model pruned with `ratios` (groups not named keep every channel)."""
        fractions = {g: self.kept_fraction(g, r) for g, r in ratios.items() if r > 0}
        total = float(self.fixed)
        for macs, effect in self.terms:
            factor = 1.0
            for group, exponent in effect:
                factor *= fractions.get(group, 1.0) ** exponent
            total += macs * factor
        return int(round(total))


def cost_model(
    model: nn.Module, example: torch.Tensor, groups: dict[str, tuple[int, int]], round_to: int
) -> CostModel:
    """`CostModel.probe(model, example, groups, round_to)`, from the cache when this model was
    probed before (see the module docstring), else probed and stored."""
    path = home_dir() / FOLDER / f"{cache_key(model, example, groups, round_to)}.json"
    cached = _read(path)
    if cached is not None:
        return cached
    cost = CostModel.probe(model, example, groups, round_to=round_to)
    _write(path, cost)
    return cost


def cache_key(
    model: nn.Module, example: torch.Tensor, groups: dict[str, tuple[int, int]], round_to: int
) -> str:
    """A hex digest of everything a probe's result depends on."""
    facts = {
        "version": VERSION,
        "structure": repr(model),
        "input": list(example.shape),
        "groups": sorted((name, list(cd)) for name, cd in groups.items()),
        "round_to": round_to,
        "layer_macs": sorted(layer_macs(model, example).items()),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def _read(path: Path) -> CostModel | None:
    try:
        data = json.loads(path.read_text())
        return CostModel(
            total=int(data["total"]),
            fixed=int(data["fixed"]),
            terms=tuple(
                (int(macs), tuple((str(g), float(e)) for g, e in effect))
                for macs, effect in data["terms"]
            ),
            channels={str(k): int(v) for k, v in data["channels"].items()},
            divisors={str(k): int(v) for k, v in data["divisors"].items()},
            round_to=int(data["round_to"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(path: Path, cost: CostModel) -> None:
    """Write atomically (a temporary file renamed over the target); failures are ignored."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(cost), out)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
