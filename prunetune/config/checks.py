"""Every check of the search settings, in one place: one function per part (called by the part
when it is built) and `check_settings` for the rules that join parts. Each raises ConfigError with
one line naming the offending key as the user writes it (the YAML key, the flag without --).

Ranges: trials, base_epochs, base_batch_size, subset, batch_size, threads, fps_repeats, workers,
round_to >= 1; train_threads auto or >= 1; epochs >= 0; seed, base_seed in [0, 2**32); lr,
base_lr, max_flops, cpus_per_trial finite and > 0; gpus_per_trial finite and >= 0;
0 <= ratio_min <= ratio_max < 1; ratio_step in (0, 1); distill, min_accuracy and max_drop in
[0, 1]; no duplicates in objectives, bits, importance; the study name as in prunetune.names.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
import reprlib
import types
import typing

from prunetune.errors import ConfigError
from prunetune.names import check_study_name
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


def check_types(part: object, key_of: dict[str, str] | None = None) -> None:
    """Each field of the dataclass `part` has its annotated type (a list's items too); `key_of`
    maps a field to the key named in the error (BaseRecipe's `lr` is the user's `base_lr`)."""
    hints = typing.get_type_hints(type(part))
    for f in dataclasses.fields(part):
        name = (key_of or {}).get(f.name, f.name)
        _check_type(name, getattr(part, f.name), hints[f.name])


def check_task(task) -> None:
    check_types(task)


def check_base_recipe(base) -> None:
    """The base model's training recipe; errors name search's keys (base_lr, ...)."""
    check_types(base, {f: f"base_{f}" for f in ("epochs", "lr", "batch_size", "seed")})
    _at_least_one(base_epochs=base.epochs, base_batch_size=base.batch_size)
    _seed("base_seed", base.seed)
    _positive(base_lr=base.lr)


def check_stores(stores) -> None:
    check_types(stores)
    watch(stores.storage, stores.tracking_uri)  # their passwords never reach a message
    if stores.study is not None:
        check_study_name(stores.study)


def check_budget(budget) -> None:
    check_types(budget)
    if budget.trials < 1:
        raise ConfigError(f"trials must be >= 1, got {budget.trials}")
    if budget.timeout is not None and not (finite(budget.timeout) and budget.timeout > 0):
        raise ConfigError(f"timeout must be a positive number of seconds, got {budget.timeout}")


def check_plan(plan) -> None:
    """The strategy and the options that belong to one strategy only."""
    check_types(plan)
    _choice("strategy", plan.strategy, STRATEGIES)
    _choice("sampler", plan.sampler, SAMPLERS)
    _choice("parametrization", plan.parametrization, PARAMETRIZATIONS)
    _seed("seed", plan.seed)
    if plan.screen < 0:
        raise ConfigError(
            f"screen must be >= 0 (configs screened per full trial; 0: no screening), "
            f"got {plan.screen}"
        )
    if plan.candidates < 1:
        raise ConfigError(
            f"candidates must be >= 1 (allocations scored per full trial), got {plan.candidates}"
        )
    if plan.proxy_steps is not None and plan.proxy_steps < 0:
        raise ConfigError(
            f"proxy_steps must be >= 0 (0: no fine-tune in the proxy), got {plan.proxy_steps}"
        )
    if plan.targets is not None:
        check_targets(plan.targets)
    _only_with(
        plan,
        "targets",
        plan.targets is not None,
        "--targets sets the targets strategy's cost targets",
    )
    _only_with(
        plan,
        "search",
        plan.parametrization != "ratios",
        "--parametrization shapes the per-group search",
    )
    _only_with(plan, "search", plan.screen > 0, "--screen screens the per-group search's proposals")


def _only_with(plan, strategy: str, used: bool, what: str) -> None:
    """An option of one strategy only (`what` says what it does) given with another: refused."""
    if used and plan.strategy != strategy:
        raise ConfigError(f"{what}: use it with --strategy {strategy}, not {plan.strategy}")


def check_selection(selection) -> None:
    check_types(selection)
    if not selection.objectives:
        raise ConfigError("objectives must name at least one objective")
    _no_repeats("objectives", selection.objectives)
    _positive(max_flops=selection.max_flops)
    if not (finite(selection.max_drop) and 0.0 <= selection.max_drop <= 1.0):
        raise ConfigError(f"max_drop is a fraction of accuracy in [0, 1], got {selection.max_drop}")
    if selection.min_accuracy is not None and not 0.0 <= selection.min_accuracy <= 1.0:
        raise ConfigError(f"min_accuracy is a fraction in [0, 1], got {selection.min_accuracy}")


def check_space_spec(spec) -> None:
    check_types(spec)
    _choice("granularity", spec.granularity, GRANULARITIES)
    if not 0.0 <= spec.ratio_min <= spec.ratio_max < 1.0:
        raise ConfigError(
            f"need 0 <= ratio_min <= ratio_max < 1, got {spec.ratio_min}, {spec.ratio_max}"
        )
    if not 0.0 < spec.ratio_step < 1.0:
        raise ConfigError(f"ratio_step must be in (0, 1), got {spec.ratio_step}")
    _at_least_one(round_to=spec.round_to)
    from prunetune.compress.quantize import ALLOWED_BITS

    bad = sorted({b for b in spec.bits if b not in ALLOWED_BITS})
    if bad or not spec.bits:
        raise ConfigError(
            f"bit-widths {shown(bad) if bad else '[]'} not allowed; choose from "
            f"{list(ALLOWED_BITS)}"
        )
    _no_repeats("bits", spec.bits)
    _no_repeats("importance", spec.importance)


def check_finetune(recipe) -> None:
    check_types(recipe)
    _at_least_one(subset=recipe.subset, batch_size=recipe.batch_size)
    if recipe.epochs < 0:
        raise ConfigError(f"epochs must be >= 0, got {recipe.epochs}")
    _positive(lr=recipe.lr)
    if not 0.0 <= recipe.lr_scaling <= 2.0:
        raise ConfigError(f"lr_scaling must be in [0, 2], got {recipe.lr_scaling}")
    if not 0.0 <= recipe.distill <= 1.0:
        raise ConfigError(f"distill must be in [0, 1], got {recipe.distill}")


def check_measurement(measurement) -> None:
    """The device by name only (whether CUDA exists is checked where the device is used: a study
    made on a GPU machine can still be read elsewhere)."""
    check_types(measurement)
    _at_least_one(threads=measurement.threads, fps_repeats=measurement.fps_repeats)
    check_train_threads(measurement.train_threads)
    if not re.fullmatch(DEVICE_PATTERN, measurement.device):
        raise ConfigError(
            f"device must be auto, cpu, cuda or cuda:N, got {shown(measurement.device)}"
        )


def check_runner(runner) -> None:
    check_types(runner)
    _choice("backend", runner.backend, BACKENDS)
    _at_least_one(workers=runner.workers)
    _positive(cpus_per_trial=runner.cpus_per_trial)
    if not (finite(runner.gpus_per_trial) and runner.gpus_per_trial >= 0):
        raise ConfigError(
            f"gpus_per_trial must be a finite number >= 0, got {runner.gpus_per_trial}"
        )


def check_settings(settings) -> None:
    """The rules that join parts. With Ray, --gpus-per-trial decides a trial's device, so only
    auto or the device it implies is accepted."""
    device, runner = settings.measurement.device, settings.runner
    if runner.backend == "ray" and device != "auto":
        implied = "cuda" if runner.gpus_per_trial > 0 else "cpu"
        if device != implied:
            raise ConfigError(
                f"with the ray backend, --gpus-per-trial decides a trial's device "
                f"({implied} for {runner.gpus_per_trial:g}); use --device auto or {implied}"
            )


def check_targets(values: list[float]) -> list[float]:
    """`values` as distinct fractions in (0, 1), lightest first; ConfigError otherwise."""
    if not values:
        raise ConfigError("targets must name at least one fraction of the base's MACs")
    bad = [
        v
        for v in values
        if not (
            isinstance(v, int | float) and not isinstance(v, bool) and finite(v) and 0.0 < v < 1.0
        )
    ]
    if bad:
        raise ConfigError(f"targets are fractions of the base's MACs in (0, 1), got {bad[0]!r}")
    if len(set(values)) != len(values):
        raise ConfigError("targets must not repeat a value")
    return sorted((float(v) for v in values), reverse=True)


def check_train_threads(value: object) -> int | str:
    """`value` as a training-thread setting: "auto" or a whole number >= 1 (also written as a
    string of digits, as a flag gives it). ConfigError (one line) otherwise."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    whole = isinstance(value, int) and not isinstance(value, bool)
    if value == AUTO_THREADS or (whole and value >= 1):
        return value
    raise ConfigError(f"train_threads must be auto or a whole number >= 1, got {value!r}")


def _choice(name: str, value: str, known: tuple[str, ...]) -> None:
    if value not in known:
        raise ConfigError(f"unknown {name} {shown(value)}; known: {', '.join(known)}")


def _at_least_one(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")


def _positive(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and not (finite(value) and value > 0):
            raise ConfigError(f"{name} must be a finite number > 0, got {value}")


def _seed(name: str, value: int) -> None:
    if not 0 <= value < MAX_SEED:
        raise ConfigError(f"{name} must be in [0, 2**32), got {value}")


def _no_repeats(name: str, values: list) -> None:
    counts = collections.Counter(values)  # linear: a Counter, not list.count
    repeated = sorted(repr(v) for v, n in counts.items() if n > 1)
    if repeated:
        more = f" (and {len(repeated) - 5} more)" if len(repeated) > 5 else ""
        raise ConfigError(
            f"{name} must not repeat a value, got {', '.join(repeated[:5])}{more} more than once"
        )


def finite(value: float) -> bool:
    """math.isfinite, False for an int too large to be a float."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def shown(value: object) -> str:
    """A value for an error message: its repr bounded in length and depth (reprlib: a huge or
    deeply shared structure is never rendered whole)."""
    r = reprlib.Repr()  # Python 3.11: limits are attributes
    r.maxlevel, r.maxlist, r.maxdict, r.maxtuple, r.maxset = 2, 4, 4, 4, 4
    r.maxstring, r.maxother, r.maxlong = 60, 60, 40
    text = r.repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _check_type(name: str, value, hint) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
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
