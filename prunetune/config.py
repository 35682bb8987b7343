"""SearchConfig: one validated object built from CLI flags and/or a YAML file.

Precedence: defaults < YAML file (`--config`) < flags given on the command line. Unknown YAML keys
and values of the wrong type are rejected with a ConfigError naming the key. The resolved config is
stored with the study (and logged to MLflow) so a search can be re-run and resumed exactly.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from prunetune.errors import ConfigError

SAMPLERS = ("tpe", "nsga2", "nsga3", "random", "gp")
BACKENDS = ("optuna", "ray")
GRANULARITIES = ("layer", "block", "global")
STRATEGIES = ("search", "uniform", "global", "sensitivity")


@dataclass
class SearchConfig:
    """Everything a search needs. Field names are the YAML keys and (with - for _) the CLI flags."""

    model: str = "mnist_net"
    dataset: str = "mnist5k"
    data_root: str | None = None
    checkpoint: str | None = None
    base_epochs: int = 5
    base_seed: int = 0
    seed: int = 0
    study: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    trials: int = 30
    timeout: float | None = None
    strategy: str = "search"
    screen: int = 8
    no_screen: bool = False
    sampler: str = "tpe"
    objectives: list[str] = field(default_factory=lambda: ["accuracy", "flops", "fps"])
    min_accuracy: float | None = None
    max_flops: float | None = None
    space: str | None = None
    granularity: str = "layer"
    ratio_min: float = 0.0
    ratio_max: float = 0.95
    ratio_step: float = 0.05
    round_to: int = 1
    bits: list[int] = field(default_factory=lambda: [32, 8, 6, 4])
    importance: list[str] = field(default_factory=lambda: ["l2"])
    subset: int = 2500
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 64
    distill: float = 0.0
    runtime: str = "torch"
    threads: int = 1
    fps_repeats: int = 11
    backend: str = "optuna"
    workers: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str | None = None
    keep_all_weights: bool = False
    select: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def study_name(self) -> str:
        return self.study or f"{self.model.replace(':', '_')}-{self.dataset}"

    @property
    def storage_url(self) -> str:
        return self.storage or "sqlite:///mlruns/optuna.db"

    def validate(self) -> None:
        """Check types and ranges; raise ConfigError naming the offending key."""
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), _hints()[f.name])
        if self.trials < 1:
            raise ConfigError(f"trials must be >= 1, got {self.trials}")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigError(f"timeout must be a positive number of seconds, got {self.timeout}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; known: {', '.join(STRATEGIES)}")
        if self.screen < 1:
            raise ConfigError(f"screen must be >= 1 (configs screened per full trial; --no-screen "
                              f"turns screening off), got {self.screen}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r}; known: {', '.join(SAMPLERS)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; known: {', '.join(BACKENDS)}")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"unknown granularity {self.granularity!r}; known: {', '.join(GRANULARITIES)}")
        if not 0.0 <= self.ratio_min <= self.ratio_max < 1.0:
            raise ConfigError(f"need 0 <= ratio_min <= ratio_max < 1, got {self.ratio_min}, {self.ratio_max}")
        if not 0.0 < self.ratio_step < 1.0:
            raise ConfigError(f"ratio_step must be in (0, 1), got {self.ratio_step}")
        for name in ("base_epochs", "subset", "batch_size", "threads", "fps_repeats", "workers", "round_to"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs < 0:
            raise ConfigError(f"epochs must be >= 0, got {self.epochs}")
        if not 0.0 <= self.distill <= 1.0:
            raise ConfigError(f"distill must be in [0, 1], got {self.distill}")
        if self.min_accuracy is not None and not 0.0 <= self.min_accuracy <= 1.0:
            raise ConfigError(f"min_accuracy is a fraction in [0, 1], got {self.min_accuracy}")
        from prunetune.compress.quantize import ALLOWED_BITS

        bad = [b for b in self.bits if b not in ALLOWED_BITS]
        if bad or not self.bits:
            raise ConfigError(f"bit-widths {bad or '[]'} not allowed; choose from {list(ALLOWED_BITS)}")
        if not self.objectives:
            raise ConfigError("objectives must name at least one objective")

    @property
    def screening(self) -> bool:
        """Multi-fidelity screening is on: the default for strategy `search` (off: --no-screen)."""
        return self.strategy == "search" and not self.no_screen

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_sources(cls, yaml_path: str | Path | None = None, overrides: dict | None = None) -> SearchConfig:
        """Defaults, then the YAML file, then explicit overrides (flags the user gave)."""
        values: dict = {}
        if yaml_path is not None:
            values.update(read_yaml_mapping(yaml_path, "config"))
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(unknown)} in {yaml_path or 'flags'}")
        return cls(**values)


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """A YAML file that must hold a mapping; clear errors for missing or malformed files."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} file {str(p)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} file {str(p)!r} must hold a mapping of keys to values")
    return data


def _hints() -> dict:
    return typing.get_type_hints(SearchConfig)


def _check_type(name: str, value, hint) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        for v in value:
            _check_type(name, v, args[0])
        return
    ok = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}[hint]
    if not isinstance(value, ok) or (hint is not bool and isinstance(value, bool)):
        raise ConfigError(f"{name} must be of type {hint.__name__}, got {value!r}")
