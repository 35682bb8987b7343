"""SearchSpace: the per-group pruning ratios and per-layer bit-widths a search may choose.

Derived from a model's inventory (its prunable groups and quantizable layers). One definition is
rendered to Optuna suggestions (`suggest`, under either backend: the Ray searcher asks the same
study), decoded into a CompressionConfig (`decode`), and round-trips through YAML (`to_yaml` /
`from_yaml`).

Parameter names: `ratio:<dim>` (a dim is a group, a block of groups, or `all`), `bits:<dim>`
(a dim is a layer, a block of layers, or `all`) and `importance` when more than one criterion is
searched.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from prunetune.compress import ALLOWED_BITS, IMPORTANCES, CompressionConfig
from prunetune.config import GRANULARITIES, read_yaml_mapping
from prunetune.errors import ConfigError

SPACE_KEYS = {"model", "granularity", "ratio", "round_to", "groups", "bits", "importance"}


def block_of(names: list[str]) -> dict[str, str]:
    """Map each layer/group name to its block: the first path component when that yields at least
    3 blocks (ResNet stages `layer1..4`), else the first two (`features.3` of MobileNet)."""
    first = {n: n.split(".")[0] for n in names}
    if len(set(first.values())) >= min(3, len(names)):
        return first
    return {n: ".".join(n.split(".")[:2]) for n in names}


@dataclass
class GroupSpec:
    """One prunable group: its size, its share of the model's MACs and its allowed ratio range."""

    channels: int
    macs_share: float
    low: float
    high: float


@dataclass
class SearchSpace:
    """Per-group ratios in [low, high] on a grid of `ratio_step`, bit-widths from `bits`."""

    groups: dict[str, GroupSpec]
    quant_layers: list[str]
    granularity: str = "layer"
    ratio_step: float = 0.05
    round_to: int = 1
    bits: list[int] = field(default_factory=lambda: [32, 8, 6, 4])
    importance: list[str] = field(default_factory=lambda: ["l2"])
    model: str = ""

    def __post_init__(self) -> None:
        self.validate()

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_inventory(
        cls,
        inv,
        *,
        granularity: str = "layer",
        ratio_min: float = 0.0,
        ratio_max: float = 0.95,
        ratio_step: float = 0.05,
        round_to: int = 1,
        bits: list[int] | tuple[int, ...] = (32, 8, 6, 4),
        importance: list[str] | tuple[str, ...] = ("l2",),
        model: str = "",
    ) -> SearchSpace:
        groups = {
            g.name: GroupSpec(g.channels, round(g.macs_share, 6), ratio_min, ratio_max)
            for g in inv.groups
        }
        return cls(
            groups=groups,
            quant_layers=[q.name for q in inv.quant_layers],
            granularity=granularity,
            ratio_step=ratio_step,
            round_to=round_to,
            bits=list(bits),
            importance=list(importance),
            model=model,
        )

    def validate(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ConfigError(
                f"space granularity must be one of {', '.join(GRANULARITIES)}, "
                f"got {self.granularity!r}"
            )
        if not 0.0 < self.ratio_step < 1.0:
            raise ConfigError(f"space ratio step must be in (0, 1), got {self.ratio_step}")
        for name, g in self.groups.items():
            if not 0.0 <= g.low <= g.high < 1.0:
                raise ConfigError(
                    f"space ratio range of group {name!r} must satisfy "
                    f"0 <= min <= max < 1, got [{g.low}, {g.high}]"
                )
        bad = [b for b in self.bits if b not in ALLOWED_BITS]
        if bad or not self.bits:
            raise ConfigError(
                f"bit-widths {bad or '[]'} not allowed; choose from {list(ALLOWED_BITS)}"
            )
        for imp in self.importance:
            if imp not in IMPORTANCES:
                raise ConfigError(
                    f"unknown importance {imp!r}; known: {', '.join(IMPORTANCES.names())}"
                )
        if not self.importance:
            raise ConfigError("space needs at least one importance criterion")
        if self.round_to < 1:
            raise ConfigError(f"round_to must be >= 1, got {self.round_to}")

    # -- dimensions -----------------------------------------------------------------------------
    def _dims(self, names: list[str]) -> dict[str, list[str]]:
        if self.granularity == "global":
            return {"all": list(names)} if names else {}
        if self.granularity == "block":
            blocks = block_of(names)
            out: dict[str, list[str]] = {}
            for n in names:
                out.setdefault(blocks[n], []).append(n)
            return out
        return {n: [n] for n in names}

    def ratio_dims(self) -> dict[str, list[str]]:
        """Searched ratio dimension -> the groups it sets (groups with an empty range are fixed)."""
        return self._dims([n for n, g in self.groups.items() if g.high > 0.0])

    def bits_dims(self) -> dict[str, list[str]]:
        return self._dims(self.quant_layers) if len(self.bits) > 1 else {}

    def _ratio_range(self, members: list[str]) -> tuple[float, float]:
        low = max(self.groups[m].low for m in members)
        high = min(self.groups[m].high for m in members)
        high = max(low, low + math.floor((high - low) / self.ratio_step + 1e-9) * self.ratio_step)
        return round(low, 6), round(high, 6)

    def suggest(self, trial) -> dict:
        """Ask an Optuna trial for every dimension; returns the params dict."""
        params: dict = {}
        for dim, members in self.ratio_dims().items():
            low, high = self._ratio_range(members)
            params[f"ratio:{dim}"] = (
                trial.suggest_float(f"ratio:{dim}", low, high, step=self.ratio_step)
                if high > low
                else low
            )
        return params | self.suggest_choices(trial)

    def suggest_choices(self, trial) -> dict:
        """The bit-width and importance params of one trial (the spaces built on this one ask
        their own ratio parametrization, then these)."""
        params: dict = {}
        for dim in self.bits_dims():
            params[f"bits:{dim}"] = trial.suggest_categorical(f"bits:{dim}", self.bits)
        if len(self.importance) > 1:
            params["importance"] = trial.suggest_categorical("importance", self.importance)
        return params

    def sampler(self, seed: int) -> None:  # noqa: ARG002
        """None: the search config's sampler."""
        return None

    def exhausted(self, study) -> bool:  # noqa: ARG002
        """Never: the budget or the timeout ends a search."""
        return False

    def decode(self, params: dict) -> CompressionConfig:
        """Turn a params dict (from Optuna or Ray) into a CompressionConfig over groups and
        layers."""
        ratios = {n: g.low for n, g in self.groups.items()}
        for dim, members in self.ratio_dims().items():
            value = float(params.get(f"ratio:{dim}", self._ratio_range(members)[0]))
            for m in members:
                ratios[m] = round(min(max(value, 0.0), 0.999), 6)
        bits = {n: self.bits[0] for n in self.quant_layers}
        for dim, members in self.bits_dims().items():
            for m in members:
                bits[m] = int(params[f"bits:{dim}"])
        importance = params.get("importance", self.importance[0])
        return CompressionConfig(
            ratios=ratios, bits=bits, importance=importance, round_to=self.round_to
        )

    def warm_start(self) -> list[dict]:
        """Sensible first trials: uniform ratios 0.5 and 0.75 in float, and 0.5 at 8 bits
        everywhere. (No-pruning seeds are left out: the uncompressed model is the base row of every
        table, and re-fine-tuning it is the costliest trial there is.)"""
        seeds = []
        for ratio, bits in ((0.5, 32), (0.75, 32), (0.5, 8)):
            p: dict = {}
            for dim, members in self.ratio_dims().items():
                low, high = self._ratio_range(members)
                p[f"ratio:{dim}"] = min(
                    max(round(ratio / self.ratio_step) * self.ratio_step, low), high
                )
            for dim in self.bits_dims():
                p[f"bits:{dim}"] = bits if bits in self.bits else self.bits[0]
            if len(self.importance) > 1:
                p["importance"] = self.importance[0]
            if p not in seeds:
                seeds.append(p)
        return seeds

    def summary(self) -> dict:
        return {
            "granularity": self.granularity,
            "ratio_dims": len(self.ratio_dims()),
            "bits_dims": len(self.bits_dims()),
            "groups": len(self.groups),
            "quant_layers": len(self.quant_layers),
            "bits": self.bits,
            "importance": self.importance,
            "ratio_step": self.ratio_step,
            "round_to": self.round_to,
        }

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        lows = {g.low for g in self.groups.values()} or {0.0}
        highs = {g.high for g in self.groups.values()} or {0.95}
        return {
            "model": self.model,
            "granularity": self.granularity,
            "ratio": {"min": min(lows), "max": max(highs), "step": self.ratio_step},
            "round_to": self.round_to,
            "groups": {
                n: {"channels": g.channels, "macs_share": g.macs_share, "ratio": [g.low, g.high]}
                for n, g in self.groups.items()
            },
            "bits": {"choices": list(self.bits), "layers": list(self.quant_layers)},
            "importance": list(self.importance),
        }

    def fingerprint(self) -> str:
        """A hash of everything that defines the space (a study must keep one space)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        header = (
            "# prunetune search space: edit ranges, then `prunetune search --space FILE`.\n"
            "# groups.<name>.ratio = [min, max] fraction of channels removed (max < 1);\n"
            "# bits.choices from {2..8, 32} (32 = float); granularity: layer | block | global.\n"
        )
        return header + yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "space") -> SearchSpace:
        unknown = _names(k for k in data if k not in SPACE_KEYS)
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {unknown}; allowed: {', '.join(sorted(SPACE_KEYS))}"
            )
        try:
            ratio = data.get("ratio", {}) or {}
            _only(ratio, {"min", "max", "step"}, f"{source}: ratio")
            groups = {}
            for name, g in (data.get("groups") or {}).items():
                _only(g, {"channels", "macs_share", "ratio"}, f"{source}: groups.{_names([name])}")
                lo, hi = g.get("ratio", [ratio.get("min", 0.0), ratio.get("max", 0.95)])
                groups[str(name)] = GroupSpec(
                    int(g.get("channels", 0)),
                    float(g.get("macs_share", 0.0)),
                    _num(lo, f"groups.{_names([name])}.ratio"),
                    _num(hi, f"groups.{_names([name])}.ratio"),
                )
            bits = data.get("bits", {}) or {}
            _only(bits, {"choices", "layers"}, f"{source}: bits")
            choices = bits.get("choices", [32, 8, 6, 4])
            if not isinstance(choices, list) or not all(
                isinstance(b, int) and not isinstance(b, bool) for b in choices
            ):
                raise ConfigError(
                    f"{source}: bits.choices must be a list of integers, got {choices!r}"
                )
            importance = data.get("importance", ["l2"])
            importance = [importance] if isinstance(importance, str) else list(importance)
            return cls(
                groups=groups,
                quant_layers=[str(x) for x in bits.get("layers", [])],
                granularity=str(data.get("granularity", "layer")),
                ratio_step=_num(ratio.get("step", 0.05), "ratio.step"),
                round_to=int(data.get("round_to", 1)),
                bits=choices,
                importance=importance,
                model=str(data.get("model", "")),
            )
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(
                f"{source}: malformed space ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''})"
            ) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        return cls.from_dict(read_yaml_mapping(path, "space"), source=str(path))

    def check_fits(self, inv) -> None:
        """Raise ConfigError when the space names groups or layers the model does not have."""
        known_groups = {g.name for g in inv.groups}
        known_layers = {q.name for q in inv.quant_layers}
        bad = _names(set(self.groups) - known_groups)
        if bad:
            raise ConfigError(
                f"space names unknown group(s) {bad}; "
                f"the model's groups: {', '.join(sorted(known_groups))}"
            )
        bad = _names(set(self.quant_layers) - known_layers)
        if bad:
            raise ConfigError(f"space names unknown layer(s) {bad}")


def _only(mapping, allowed: set[str], where: str) -> None:
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} must be a mapping")
    unknown = _names(k for k in mapping if k not in allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; allowed: {', '.join(sorted(allowed))}"
        )


def _names(names) -> str:
    """Names for a one-line message: sorted, comma-separated, quoted unless plain words, digits,
    dots and dashes (layer paths like `layer1.0.conv1`)."""
    shown = (n if isinstance(n, str) and re.fullmatch(r"[\w.-]+", n) else repr(n) for n in names)
    return ", ".join(sorted(shown))


def _num(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    return float(value)


class OverSearchSpace:
    """What a space built over a SearchSpace (`self.inner`) passes through unchanged: its
    quantizable layers, groups and ratio step (AllocationSpace, TargetSpace)."""

    inner: SearchSpace

    @property
    def quant_layers(self) -> list[str]:
        return self.inner.quant_layers

    @property
    def groups(self):
        return self.inner.groups

    @property
    def ratio_step(self) -> float:
        return self.inner.ratio_step
