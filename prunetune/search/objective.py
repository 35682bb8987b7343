"""One trial: params -> compress the base model -> fine-tune on a fresh class-balanced subset ->
re-estimate batch-norm statistics -> measure on the validation split -> TrialRecord.

`prepare_search` builds, once per search (or once per Ray worker), everything trials share: data,
base model, inventory, space, the base model's metrics, the machine's QuietLock and the base
model's runners. `run_trial` is a pure function of (setup, params, trial number, replayed trial):
its seed is derived from the study seed and the trial number (a replay's: the replayed trial's),
so a trial can be replayed and a resumed study behaves like an uninterrupted one.

Devices: fine-tuning, batch-norm recalibration and evaluation run on `setup.device` (one decision
per search, `--device`); the shared base model and every model handed to a runner stay on the CPU,
so the inventory, `compress`, FPS (CPU runtimes, both models on the CPU) and saved weights never
see another device. A distillation teacher on another device is a copy (see training.train).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from prunetune import threads
from prunetune.compress import (
    CompressionConfig,
    compress,
    compressed_size_bytes,
    inventory,
    load_compressed_file,
    save_compressed,
    size_bytes,
)
from prunetune.config import BaseRecipe, SearchSettings, SpaceSpec
from prunetune.data import DataBundle, create_dataset
from prunetune.measure import count_macs, count_params, machine_load
from prunetune.models import BaseModel, Recipe, get_base_model, resolve_device
from prunetune.models.training import DivergedError
from prunetune.runtimes import make_runner, measure_fps
from prunetune.search import strategies
from prunetune.search.objectives import get_objective
from prunetune.search.quiet import QuietLock
from prunetune.search.records import COMPLETE, FAILED, REJECTED, TrialRecord
from prunetune.search.workload import DatasetWorkload, UserFunctionError, Workload
from prunetune.spaces import SearchSpace


@dataclass
class SearchSetup:
    """What every trial of one search shares. Picklable (Ray ships it to workers once); `runners`,
    the base model's runners keyed by (runtime, threads), is left out of the pickle (ONNX Runtime
    sessions do not travel) and built again where needed. `device`: where trials train.
    `workload`: what trials do with data (see prunetune.search.workload); `bundle` is the CLI's data
    set (None for a search of the Python API, whose `example` is the user's one-sample input)."""

    config: SearchSettings
    bundle: DataBundle | None
    base: BaseModel
    space: SearchSpace
    base_metrics: dict
    weights_dir: Path
    skipped_layers: list
    workload: Workload
    device: str = "cpu"
    example: torch.Tensor | None = None
    runners: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "runners"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, runners={})

    @property
    def lock(self) -> QuietLock:
        return QuietLock()

    @property
    def in_memory(self) -> bool:
        """The base model is the caller's object (Python API), not a registry name."""
        return self.bundle is None

    def example_input(self) -> torch.Tensor:
        return self.bundle.example_input(1) if self.bundle is not None else self.example

    def load_trial(self, path: str | Path) -> nn.Module:
        """A trial's saved model, rebuilt from this search's base model."""
        if self.in_memory:
            return load_compressed_file(path, base_model=self.base.model)[0]
        return load_compressed_file(path, model=self.config.task.model)[0]


def trial_seed(study_seed: int, number: int) -> int:
    """Deterministic per-trial seed (subset draws, fine-tuning, calibration)."""
    return (study_seed * 1_000_003 + number * 7919 + 17) % (2**31 - 1)


def base_recipe(base: BaseRecipe) -> Recipe:
    """How the base model is trained when no checkpoint is given (the training part of the
    BaseRecipe; its seed is the other). The one definition: `prunetune train`, `search`,
    `sensitivity` and `export` all build their base through it, so the same recipe finds the same
    cached base."""
    return Recipe(epochs=base.epochs, lr=base.lr, batch_size=base.batch_size)


def build_space(spec: SpaceSpec, model_name: str, inv) -> SearchSpace:
    """The space from `spec.space` (a YAML file, checked against the model) or derived from the
    inventory with the spec's ranges."""
    if spec.space:
        space = SearchSpace.from_yaml(spec.space)
        space.check_fits(inv)
        space.model = space.model or model_name
        return space
    return SearchSpace.from_inventory(
        inv,
        granularity=spec.granularity,
        ratio_min=spec.ratio_min,
        ratio_max=spec.ratio_max,
        ratio_step=spec.ratio_step,
        round_to=spec.round_to,
        bits=spec.bits,
        importance=spec.importance,
        model=model_name,
    )


def prepare_search(cfg: SearchSettings, *, weights_dir: Path, log=lambda m: None) -> SearchSetup:
    """Load data and the base model (training and caching it if needed), derive the space,
    measure the base model. The device (`cfg.measurement.device`; with Ray the driver's own, as
    trials get theirs from --gpus-per-trial) is decided once, first: a CUDA device that is not there
    is a ConfigError before anything is loaded. Raises PrunetuneError subclasses for user
    mistakes."""
    # under Ray the driver may have no GPU of its own: "auto" unless the user said cpu
    device = resolve_device(
        cfg.measurement.device
        if cfg.runner.backend != "ray" or cfg.measurement.device == "cpu"
        else "auto"
    )
    bundle = create_dataset(cfg.task.dataset, data_root=cfg.task.data_root)
    base = get_base_model(
        cfg.task.model,
        bundle,
        recipe=base_recipe(cfg.base),
        seed=cfg.base.seed,
        checkpoint=cfg.task.checkpoint,
        log=log,
        device=device,
        train_threads=cfg.measurement.train_threads,
    )
    example = bundle.example_input(1)
    inv = inventory(base.model, example)
    space = strategies.make_space(
        cfg, build_space(cfg.space_spec, cfg.task.model, inv), base.model, example, bundle
    )
    workload = DatasetWorkload(
        bundle,
        epochs=cfg.finetune.epochs,
        subset=cfg.finetune.subset,
        lr=cfg.finetune.lr,
        batch_size=cfg.finetune.batch_size,
        distill=cfg.finetune.distill,
        teacher=base.model,
        proxy_steps=cfg.proxy_fine_tune_steps,
        train_threads=cfg.measurement.train_threads,
    )
    setup = SearchSetup(
        config=cfg,
        bundle=bundle,
        base=base,
        space=space,
        base_metrics={},
        weights_dir=weights_dir,
        skipped_layers=list(inv.skipped),
        workload=workload,
        device=str(device),
    )
    setup.base_metrics = measure_base(setup)
    return setup


def _runner(setup: SearchSetup, model: nn.Module, bits: dict | None, seed: int):
    cfg = setup.config
    calib = (
        setup.workload.calibration_batches(seed)
        if cfg.measurement.runtime.endswith("int8")
        else None
    )
    return make_runner(
        model,
        cfg.measurement.runtime,
        setup.example_input(),
        threads=cfg.measurement.threads,
        calibration_batches=calib,
        layer_bits=bits,
    )


def _base_runner(setup: SearchSetup):
    """The base model's runner on the setup's runtime and threads, built once per setup and
    process (ONNX export and int8 calibration cost) and kept in `setup.runners`."""
    key = (setup.config.measurement.runtime, setup.config.measurement.threads)
    if (
        key not in setup.runners
    ):  # the uncompressed reference: every layer float, on the same runtime
        float_bits = {name: 32 for name in setup.space.quant_layers}
        setup.runners[key] = _runner(setup, setup.base.model, float_bits, setup.config.plan.seed)
    return setup.runners[key]


def measure_base(setup: SearchSetup) -> dict:
    """The base model's reference numbers (accuracy from its checkpoint metadata; a Python API
    search's base also carries the other metrics its eval_fn returned, as "user_metrics")."""
    model, example = setup.base.model, setup.example_input()
    macs = count_macs(model, example)
    m = setup.base.meta.get("metrics", {})
    with setup.lock.quiet():
        load = machine_load()
        timing = measure_fps(
            {"base": _base_runner(setup)},
            example,
            repeats=max(setup.config.measurement.fps_repeats, 21),
        )["base"]
    # user metrics first: they never replace prunetune's own (see records.reserved_name)
    return {
        **m.get("user_metrics", {}),
        **load,
        "accuracy": m.get("val_accuracy"),
        "test_accuracy": m.get("test_accuracy"),
        "macs": macs,
        "flops": 2 * macs,
        "bitops": macs * 32 * 32,
        "params": count_params(model),
        "size_bytes": size_bytes(model, {}),
        "fps": timing.fps,
        "latency_ms": timing.median_ms,
        "fps_spread": timing.spread,
        "speedup": 1.0,
        "runtime": setup.config.measurement.runtime,
        "threads": setup.config.measurement.threads,
        "device": setup.device,
    }


def _bitops(per_layer_macs: dict[str, int], bits: dict[str, int], total_macs: int) -> int:
    """MACs x weight bits x activation bits (activations 8-bit where the weights are quantized)."""
    counted = sum(per_layer_macs.values())
    ops = sum(
        m * bits.get(n, 32) * (8 if bits.get(n, 32) <= 8 else 32) for n, m in per_layer_macs.items()
    )
    return int(ops + (total_macs - counted) * 32 * 32)


def run_trial(
    setup: SearchSetup, params: dict, number: int, *, replay_of: int | None = None
) -> TrialRecord:
    """Run trial `number` end to end (its weights: trial-NUMBER.pt). A trial re-running trial
    `replay_of` uses that trial's seed. Never raises for a trial's own failure: the record says
    `failed` (with the reason and the full traceback) or `rejected` (a constraint broken before
    any training)."""
    cfg = setup.config
    seed = trial_seed(cfg.plan.seed, number if replay_of is None else replay_of)
    rec = TrialRecord(
        number=number,
        state=COMPLETE,
        params=dict(params),
        seed=seed,
        replay_of=replay_of,
        device=setup.device,
    )
    t0 = time.perf_counter()
    try:
        config, model = _compressed(setup, params, seed, rec)
        rec.timings["compress_s"] = time.perf_counter() - t0
        if rec.state == REJECTED:
            return rec
        t1 = time.perf_counter()
        shape = architecture(model)
        with setup.lock.busy(), threads.watch() as chosen:
            rec.curve = setup.workload.finetune(model, seed, setup.device)
            check_architecture(shape, model)  # the saved file must rebuild this very model
            _record_costs(setup, model, config, rec)  # the model train_fn left, counted again
        rec.context.update(chosen[-1].as_context() if chosen else {})
        rec.timings["finetune_s"] = time.perf_counter() - t1
        t_bn = time.perf_counter()
        with setup.lock.busy():
            if setup.workload.recalibrate(model, seed, setup.device):
                rec.timings["recalibrate_s"] = time.perf_counter() - t_bn
        t2 = time.perf_counter()
        with setup.lock.busy():
            rec.metrics.update(setup.workload.evaluate(model, setup.device))
        rec.metrics.update(_measure_speed(setup, model, config, seed, rec.context))
        missing_objectives(setup.config.selection.objectives, rec.metrics)
        rec.timings["measure_s"] = time.perf_counter() - t2
        path = setup.weights_dir / f"trial-{number:05d}.pt"
        save_compressed(path, model, config, base_reference(setup))
        rec.weights = str(path)
    except DivergedError as exc:
        rec.state, rec.reason = FAILED, f"diverged: {exc}"
    except UserFunctionError as exc:
        rec.state, rec.reason = FAILED, str(exc)
        rec.traceback = "".join(traceback.format_exception(exc))
    except SystemExit as exc:  # sys.exit in a user's model: the trial fails, the search goes on
        rec.state = FAILED
        rec.reason = f"SystemExit: sys.exit({exc.code!r:.100}) was called inside the trial"
        rec.traceback = "".join(traceback.format_exception(exc))
    except MemoryError as exc:
        rec.state, rec.reason = FAILED, "MemoryError: the trial ran out of memory"
        rec.traceback = "".join(traceback.format_exception(exc))
    except Exception as exc:  # a trial's own failure must not end the search
        where = traceback.extract_tb(exc.__traceback__)[-1]
        rec.state = FAILED
        rec.reason = f"{type(exc).__name__}: {str(exc)[:300]} (at {Path(where.filename).name}:{where.lineno})"
        rec.traceback = "".join(traceback.format_exception(exc))
    finally:
        rec.timings["total_s"] = time.perf_counter() - t0
    return rec


def _compressed(
    setup: SearchSetup, params: dict, seed: int, rec: TrialRecord
) -> tuple[CompressionConfig, nn.Module]:
    """Decode `params`, compress the base model and record the config and the compressed model's
    costs on `rec` (macs, flops, bitops, params, size_bytes), all as compute (the busy lock: never
    during another trial's timing); `rec` becomes REJECTED when the FLOPs break --max-flops."""
    cfg, example = setup.config, setup.example_input()
    with setup.lock.busy():
        config = setup.space.decode(params)  # a sweep's decode may scan or rank (strategies.py)
        rec.config = config.as_dict()
        model = compress(
            setup.base.model, config, example, data=setup.workload.importance_data(seed), seed=seed
        )
        _record_costs(setup, model, config, rec)
    if cfg.selection.max_flops is not None and rec.metrics["flops"] > cfg.selection.max_flops:
        rec.state = REJECTED
        rec.reason = f"flops {rec.metrics['flops']:,} > max_flops {cfg.selection.max_flops:,.0f}"
    return config, model


def _record_costs(
    setup: SearchSetup, model: nn.Module, config: CompressionConfig, rec: TrialRecord
) -> None:
    """The model's costs on `rec` (macs, flops, bitops, params, size_bytes): counted right after
    compression (constraints are checked before any training) and again after fine-tuning, so a
    trial is judged on the model it really produced."""
    macs, per_layer = count_macs(model, setup.example_input(), per_module=True)
    rec.metrics.update(
        macs=macs,
        flops=2 * macs,
        bitops=_bitops(per_layer, config.bits, macs),
        params=count_params(model),
        size_bytes=compressed_size_bytes(model, config),
    )


def architecture(model: nn.Module) -> tuple:
    """What a compressed-model file rebuilds: every module's name, type and settings (its
    extra_repr: strides, paddings, ...), every parameter's and buffer's name and shape."""
    modules = tuple(
        (name, f"{type(m).__name__}({m.extra_repr()})") for name, m in model.named_modules()
    )
    tensors = tuple((name, tuple(t.shape)) for name, t in model.state_dict().items())
    return modules, tensors


def check_architecture(before: tuple, model: nn.Module) -> None:
    """UserFunctionError, naming the first difference, when fine-tuning (a user's train_fn)
    changed the model's architecture: its weights file could not be rebuilt as the model that
    was measured, so the trial fails (alone) instead of the reload at the end of the search."""
    after = architecture(model)
    if after == before:
        return
    for kind, old, new in (("module", before[0], after[0]), ("tensor", before[1], after[1])):
        diff = sorted(set(old) ^ set(new))
        if diff:
            name = diff[0][0] or "(the model itself)"
            raise UserFunctionError(
                f"train_fn changed the model's architecture ({kind} {name!r}: "
                f"{dict(old).get(diff[0][0])} -> {dict(new).get(diff[0][0])}); "
                "it must fine-tune the weights in place, keeping every layer "
                "and shape"
            )
    raise UserFunctionError(
        "train_fn changed the order of the model's layers; it must fine-tune the weights in place"
    )


def screen_trial(setup: SearchSetup, params: dict, number: int) -> TrialRecord:
    """The cheap fidelity of multi-fidelity screening: compress and score without fine-tuning
    (`Workload.screen`: the CLI's re-estimates the batch-norm statistics on SCREEN_IMAGES training
    images and scores the first SCREEN_VAL_IMAGES validation images). No FPS, no weights written.
    Never raises for the config's own failure (the record says `failed` or `rejected`, as
    run_trial's)."""
    cfg = setup.config
    seed = trial_seed(cfg.plan.seed, number)
    rec = TrialRecord(number=number, state=COMPLETE, params=dict(params), seed=seed)
    t0 = time.perf_counter()
    try:
        _, model = _compressed(setup, params, seed, rec)
        if rec.state == REJECTED:
            return rec
        with setup.lock.busy():
            rec.metrics.update(setup.workload.screen(model, seed, setup.device))
            missing_objectives(
                [o for o in cfg.selection.objectives if o != "fps"], rec.metrics
            )  # fps: screened as macs
    except Exception as exc:  # a config's own failure must not end the search
        rec.state, rec.reason = FAILED, f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        rec.timings["total_s"] = time.perf_counter() - t0
    return rec


def missing_objectives(objectives: list[str], metrics: dict) -> None:
    """UserFunctionError when `metrics` lacks an objective's metric (a user metric eval_fn did not
    return): the trial fails with that reason instead of the search stopping at `tell`."""
    missing = [o for o in objectives if get_objective(o).key not in metrics]
    if missing:
        keys = ", ".join(repr(get_objective(o).key) for o in missing)
        raise UserFunctionError(
            f"eval_fn returned no {keys} (named as objective); it returned {sorted(metrics)}"
        )


def base_reference(setup: SearchSetup) -> dict:
    """What a compressed-model file needs to rebuild its architecture. A Python API search's base
    is the caller's object: its files say so ("in_memory") and load only with that model."""
    example = setup.example_input()
    if setup.in_memory:
        return {
            "model": setup.config.task.model,
            "in_memory": True,
            "dataset": setup.workload.label,
            "input_shape": list(example.shape[1:]),
            "num_classes": setup.base.meta["num_classes"],
            "base_checkpoint": None,
        }
    return {
        "model": setup.config.task.model,
        "dataset": setup.bundle.name,
        "input_shape": list(setup.bundle.input_shape),
        "num_classes": setup.bundle.num_classes,
        "base_checkpoint": str(setup.base.path) if setup.base.path else None,
    }


def _measure_speed(
    setup: SearchSetup, model: nn.Module, config: CompressionConfig, seed: int, context: dict
) -> dict:
    """FPS of the trial's model and the base's, side by side (the speed metrics); the machine's
    load at that time goes to `context`."""
    cfg = setup.config
    example = setup.example_input()
    with setup.lock.busy():  # building runners (ONNX export, int8 calibration) is compute too
        candidate = _runner(setup, model, config.bits, seed)
        base = _base_runner(setup)
    with setup.lock.quiet():
        context.update(machine_load())
        t = measure_fps(
            {"trial": candidate, "base": base}, example, repeats=cfg.measurement.fps_repeats
        )
    return {
        "fps": t["trial"].fps,
        "latency_ms": t["trial"].median_ms,
        "fps_spread": t["trial"].spread,
        "speedup": t["trial"].fps / t["base"].fps,
    }
