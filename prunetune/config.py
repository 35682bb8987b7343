"""SearchConfig: one validated object built from CLI flags and/or a YAML file.

Precedence: defaults < YAML file (`--config`) < flags given on the command line. Unknown YAML keys
and values of the wrong type are rejected with a ConfigError naming the key. The resolved config is
stored with the study (and logged to MLflow) so a search can be re-run and resumed exactly.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from prunetune.errors import ConfigError
from prunetune.names import check_study_name, default_study_name
from prunetune.redact import watch

MAX_SEED = 2**32  # seeds are in [0, 2**32): what every RNG the search seeds accepts
SAMPLERS = ("tpe", "nsga2", "nsga3", "random", "gp")
BACKENDS = ("optuna", "ray")
GRANULARITIES = ("layer", "block", "global")
DEVICE_PATTERN = (
    r"auto|cpu|cuda(:\d+)?"  # --device values (prunetune.models.training.resolve_device)
)
STRATEGIES = ("targets", "search", "uniform", "global", "sensitivity")
PARAMETRIZATIONS = ("ratios", "allocation")
AUTO_THREADS = "auto"  # train_threads: measured per training run (prunetune.threads)


@dataclass
class SearchConfig:
    """Everything a search needs. Field names are the YAML keys and (with - for _) the CLI flags."""

    model: str = "mnist_net"
    dataset: str = "mnist5k"
    data_root: str | None = None
    checkpoint: str | None = None
    base_epochs: int = 5
    base_lr: float = 1e-3
    base_batch_size: int = 64
    base_seed: int = 0
    seed: int = 0
    study: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    trials: int = 30
    timeout: float | None = None
    strategy: str = "targets"
    targets: list[float] | None = None
    candidates: int = 8
    proxy_steps: int | None = None
    screen: int = 0
    parametrization: str = "ratios"
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
    device: str = "auto"
    runtime: str = "torch"
    threads: int = 1
    train_threads: int | str = AUTO_THREADS
    fps_repeats: int = 11
    backend: str = "optuna"
    workers: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str | None = None
    keep_all_weights: bool = False
    select: str | None = None
    max_drop: float = 0.01

    def __post_init__(self) -> None:
        self.validate()

    @property
    def study_name(self) -> str:
        """`study`, else a valid name derived from model and dataset (see prunetune.names)."""
        return (
            self.study if self.study is not None else default_study_name(self.model, self.dataset)
        )

    @property
    def storage_url(self) -> str:
        return self.storage or "sqlite:///mlruns/optuna.db"

    def validate(self) -> None:
        """Check types, names and ranges; raise ConfigError (one line) naming the offending key.

        Ranges: trials, base_epochs, subset, batch_size, threads, fps_repeats, workers, round_to
        >= 1; train_threads auto or >= 1;
        epochs >= 0; seed, base_seed in [0, 2**32); lr, max_flops, cpus_per_trial finite
        and > 0; gpus_per_trial finite and >= 0; 0 <= ratio_min <= ratio_max < 1; ratio_step in
        (0, 1); distill and min_accuracy in [0, 1]; no duplicates in objectives, bits, importance;
        the study name as in prunetune.names."""
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), _hints()[f.name])
        watch(self.storage, self.tracking_uri)  # their passwords never reach a message
        if self.study is not None:
            check_study_name(self.study)
        self._validate_choices()
        self._validate_numbers()
        self._validate_budget()
        from prunetune.compress.quantize import ALLOWED_BITS

        bad = sorted({b for b in self.bits if b not in ALLOWED_BITS})
        if bad or not self.bits:
            raise ConfigError(
                f"bit-widths {shown(bad) if bad else '[]'} not allowed; choose from "
                f"{list(ALLOWED_BITS)}"
            )
        if not self.objectives:
            raise ConfigError("objectives must name at least one objective")
        for name in ("objectives", "bits", "importance"):  # linear: a Counter, not list.count
            counts = collections.Counter(getattr(self, name))
            repeated = sorted(repr(v) for v, n in counts.items() if n > 1)
            if repeated:
                more = f" (and {len(repeated) - 5} more)" if len(repeated) > 5 else ""
                raise ConfigError(
                    f"{name} must not repeat a value, got "
                    f"{', '.join(repeated[:5])}{more} "
                    "more than once"
                )

    def _validate_budget(self) -> None:
        if self.timeout is not None and not (_finite(self.timeout) and self.timeout > 0):
            raise ConfigError(f"timeout must be a positive number of seconds, got {self.timeout}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"unknown strategy {shown(self.strategy)}; known: {', '.join(STRATEGIES)}"
            )
        if self.screen < 0:
            raise ConfigError(
                f"screen must be >= 0 (configs screened per full trial; 0: no "
                f"screening), got {self.screen}"
            )
        if self.parametrization not in PARAMETRIZATIONS:
            raise ConfigError(
                f"unknown parametrization {shown(self.parametrization)}; known: "
                f"{', '.join(PARAMETRIZATIONS)}"
            )
        if self.parametrization != "ratios" and self.strategy != "search":
            raise ConfigError(
                f"--parametrization shapes the per-group search: use it with --strategy search, "
                f"not {self.strategy}"
            )
        if self.candidates < 1:
            raise ConfigError(
                f"candidates must be >= 1 (allocations scored per full trial), got {self.candidates}"
            )
        if self.proxy_steps is not None and self.proxy_steps < 0:
            raise ConfigError(
                f"proxy_steps must be >= 0 (0: no fine-tune in the proxy), got {self.proxy_steps}"
            )
        if self.targets is not None:
            check_targets(self.targets)
            if self.strategy != "targets":
                raise ConfigError(
                    f"--targets sets the targets strategy's cost targets: use it with --strategy "
                    f"targets, not {self.strategy}"
                )
        if self.screen and self.strategy != "search":
            raise ConfigError(
                f"--screen screens the per-group search's proposals: use it with --strategy "
                f"search, not {self.strategy}"
            )

    def _validate_choices(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(
                f"unknown sampler {shown(self.sampler)}; known: {', '.join(SAMPLERS)}"
            )
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"unknown backend {shown(self.backend)}; known: {', '.join(BACKENDS)}"
            )
        if self.granularity not in GRANULARITIES:
            raise ConfigError(
                f"unknown granularity {shown(self.granularity)}; known: {', '.join(GRANULARITIES)}"
            )

    def _validate_numbers(self) -> None:
        if self.trials < 1:
            raise ConfigError(f"trials must be >= 1, got {self.trials}")
        if not 0.0 <= self.ratio_min <= self.ratio_max < 1.0:
            raise ConfigError(
                f"need 0 <= ratio_min <= ratio_max < 1, got {self.ratio_min}, {self.ratio_max}"
            )
        if not 0.0 < self.ratio_step < 1.0:
            raise ConfigError(f"ratio_step must be in (0, 1), got {self.ratio_step}")
        for name in (
            "base_epochs",
            "base_batch_size",
            "subset",
            "batch_size",
            "threads",
            "fps_repeats",
            "workers",
            "round_to",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs < 0:
            raise ConfigError(f"epochs must be >= 0, got {self.epochs}")
        for name in ("seed", "base_seed"):
            if not 0 <= getattr(self, name) < MAX_SEED:
                raise ConfigError(f"{name} must be in [0, 2**32), got {getattr(self, name)}")
        for name in ("lr", "base_lr", "max_flops", "cpus_per_trial"):
            value = getattr(self, name)
            if value is not None and not (_finite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {value}")
        if not (_finite(self.gpus_per_trial) and self.gpus_per_trial >= 0):
            raise ConfigError(
                f"gpus_per_trial must be a finite number >= 0, got {self.gpus_per_trial}"
            )
        if not 0.0 <= self.distill <= 1.0:
            raise ConfigError(f"distill must be in [0, 1], got {self.distill}")
        self._check_device()
        if not (_finite(self.max_drop) and 0.0 <= self.max_drop <= 1.0):
            raise ConfigError(f"max_drop is a fraction of accuracy in [0, 1], got {self.max_drop}")
        self.train_threads = check_train_threads(self.train_threads)
        if self.min_accuracy is not None and not 0.0 <= self.min_accuracy <= 1.0:
            raise ConfigError(f"min_accuracy is a fraction in [0, 1], got {self.min_accuracy}")

    def _check_device(self) -> None:
        """The name only (whether CUDA exists is checked where the device is used: a study made on
        a GPU machine can still be read elsewhere). With Ray, --gpus-per-trial decides a trial's
        device, so only auto or the device it implies is accepted."""
        if not re.fullmatch(DEVICE_PATTERN, self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {shown(self.device)}")
        if self.backend == "ray" and self.device != "auto":
            implied = "cuda" if self.gpus_per_trial > 0 else "cpu"
            if self.device != implied:
                raise ConfigError(
                    f"with the ray backend, --gpus-per-trial decides a trial's device "
                    f"({implied} for {self.gpus_per_trial:g}); use --device auto or {implied}"
                )

    @property
    def proxy_fine_tune_steps(self) -> int:
        """Steps of the proxy's short fine-tune: `proxy_steps`, else for `targets` an eighth of
        the brief fine-tune's steps (at least 4), for screening 0 (batch norms only)."""
        if self.proxy_steps is not None:
            return self.proxy_steps
        if self.strategy != "targets" or self.epochs == 0:
            return 0
        return max(4, self.epochs * math.ceil(self.subset / self.batch_size) // 8)

    @property
    def screening(self) -> bool:
        """Multi-fidelity screening is on: `--screen N` (N >= 1) with strategy `search`. Off by
        default until bench/deep_search.py shows it finds better fronts at equal wall time."""
        return self.strategy == "search" and self.screen > 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_sources(
        cls, yaml_path: str | Path | None = None, overrides: dict | None = None
    ) -> SearchConfig:
        """Defaults, then the YAML file, then explicit overrides (flags the user gave)."""
        values: dict = {}
        if yaml_path is not None:
            values.update(read_yaml_mapping(yaml_path, "config"))
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in values if k not in known)
        if unknown:
            shown = ", ".join(k if k.isidentifier() else repr(k) for k in unknown)
            where = repr(str(yaml_path)) if yaml_path is not None else "flags"
            raise ConfigError(f"unknown config key(s) {shown} in {where}")
        return cls(**values)


def check_targets(values: list[float]) -> list[float]:
    """`values` as distinct fractions in (0, 1), lightest first; ConfigError otherwise."""
    if not values:
        raise ConfigError("targets must name at least one fraction of the base's MACs")
    bad = [
        v
        for v in values
        if not (
            isinstance(v, int | float) and not isinstance(v, bool) and _finite(v) and 0.0 < v < 1.0
        )
    ]
    if bad:
        raise ConfigError(f"targets are fractions of the base's MACs in (0, 1), got {bad[0]!r}")
    if len(set(values)) != len(values):
        raise ConfigError("targets must not repeat a value")
    return sorted((float(v) for v in values), reverse=True)


MAX_YAML_BYTES = 1 << 18  # a config or space file: at most 256 KiB (a big net's space: tens of kB)
MAX_YAML_DEPTH = 32  # nested mappings / lists
MAX_YAML_ALIASES = 100  # `*anchor` references: an alias bomb needs many


def _bounded_yaml(text: str, where: str):
    """yaml.safe_load of `text` after one pass over its parse events (libyaml's, when present)
    checks depth and aliases: an alias bomb or a deeply nested document is a ConfigError before
    anything is built."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    depth = aliases = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(f"{where} is nested deeper than {MAX_YAML_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise ConfigError(
                    f"{where} uses more than {MAX_YAML_ALIASES} YAML aliases "
                    f"(*name): "
                    "refused (an alias bomb expands to gigabytes)"
                )
    return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """A YAML file that must hold a mapping; clear errors for missing or malformed files. Bounded:
    at most MAX_YAML_BYTES, MAX_YAML_DEPTH levels and MAX_YAML_ALIASES aliases (ConfigError)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file {str(p)!r} does not exist")
    if p.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(
            f"{what} file {str(p)!r} is {p.stat().st_size:,} bytes; at most "
            f"{MAX_YAML_BYTES:,} are read"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} file {str(p)!r} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {str(p)!r}: {exc.strerror}") from None
    try:
        data = _bounded_yaml(text, f"{what} file {str(p)!r}")
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{what} file {str(p)!r} is not valid YAML: {first}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a timestamp 2020-02-30
        raise ConfigError(
            f"{what} file {str(p)!r} holds a value YAML cannot build: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{what} file {str(p)!r} is nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} file {str(p)!r} must hold a mapping of keys to values")
    return data


def check_train_threads(value: object) -> int | str:
    """`value` as a training-thread setting: "auto" or a whole number >= 1 (also written as a
    string of digits, as a flag gives it). ConfigError (one line) otherwise."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    whole = isinstance(value, int) and not isinstance(value, bool)
    if value == AUTO_THREADS or (whole and value >= 1):
        return value
    raise ConfigError(f"train_threads must be auto or a whole number >= 1, got {value!r}")


def _finite(value: float) -> bool:
    """math.isfinite, False for an int too large to be a float."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _hints() -> dict:
    return typing.get_type_hints(SearchConfig)


def shown(value: object) -> str:
    """A value for an error message: its repr bounded in length and depth (reprlib: a huge or
    deeply shared structure is never rendered whole)."""
    import reprlib

    r = reprlib.Repr()  # Python 3.11: limits are attributes
    r.maxlevel, r.maxlist, r.maxdict, r.maxtuple, r.maxset = 2, 4, 4, 4, 4
    r.maxstring, r.maxother, r.maxlong = 60, 60, 40
    text = r.repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _check_type(name: str, value, hint) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return
        if len([a for a in args if a is not type(None)]) > 1:
            return  # a value of several types (train_threads: int | str): its own check decides
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list, got {type(value).__name__} {shown(value)}")
        for v in value:
            _check_type(name, v, args[0])
        return
    ok = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}[hint]
    if not isinstance(value, ok) or (hint is not bool and isinstance(value, bool)):
        raise ConfigError(
            f"{name} must be of type {hint.__name__}, got {type(value).__name__} {shown(value)}"
        )
