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
from pathlib import Path

from torch import nn

from prunetune import threads
from prunetune.compress import (
    CompressionConfig,
    compress,
    compressed_size_bytes,
    inventory,
    save_compressed,
)
from prunetune.config import BaseRecipe, SearchSettings, SpaceSpec
from prunetune.data import create_dataset
from prunetune.measure import count_macs, count_params
from prunetune.models import Recipe, get_base_model, resolve_device
from prunetune.models.training import DivergedError
from prunetune.search import strategies
from prunetune.search.records import COMPLETE, FAILED, REJECTED, TrialRecord
from prunetune.search.setup import SearchSetup
from prunetune.search.speed import measure_base, measure_speed
from prunetune.search.trial_checks import architecture, check_architecture, missing_objectives
from prunetune.search.workload import DatasetWorkload, UserFunctionError
from prunetune.spaces import SearchSpace


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
    """Load data and the base model (training and caching it if needed), derive the space, measure
    the base model. The device (`cfg.measurement.device`; with Ray the driver's own, as trials get
    theirs from --gpus-per-trial) is decided once, first: a CUDA device that is not there is a
    ConfigError before anything is loaded. Raises PrunetuneError subclasses for user mistakes."""
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
        lr_scaling=cfg.finetune.lr_scaling,
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


def kept_fraction(setup: SearchSetup, rec: TrialRecord) -> float:
    """The fraction of the base's MACs the trial's compressed model kept (1.0 when unknown)."""
    base = setup.base_metrics.get("macs")
    return rec.metrics["macs"] / base if base else 1.0


def _bitops(per_layer_macs: dict[str, int], bits: dict[str, int], total_macs: int) -> int:
    """MACs x weight bits x activation bits (activations 8-bit where the weights are quantized)."""
    counted = sum(per_layer_macs.values())
    ops = sum(
        m * bits.get(n, 32) * (8 if bits.get(n, 32) <= 8 else 32) for n, m in per_layer_macs.items()
    )
    return int(ops + (total_macs - counted) * 32 * 32)


def _fail(rec: TrialRecord, exc: BaseException) -> None:
    """Mark `rec` failed by `exc` (a trial's own failure), with the reason and, but for a diverged
    fine-tune, the full traceback."""
    if isinstance(exc, DivergedError):
        rec.state, rec.reason = FAILED, f"diverged: {exc}"
        return
    if isinstance(exc, UserFunctionError):
        reason = str(exc)
    elif isinstance(exc, SystemExit):  # sys.exit in a user's model: the trial fails, not the search
        reason = f"SystemExit: sys.exit({exc.code!r:.100}) was called inside the trial"
    elif isinstance(exc, MemoryError):
        reason = "MemoryError: the trial ran out of memory"
    else:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        reason = (
            f"{type(exc).__name__}: {str(exc)[:300]} "
            f"(at {Path(where.filename).name}:{where.lineno})"
        )
    rec.state, rec.reason = FAILED, reason
    rec.traceback = "".join(traceback.format_exception(exc))


def _train_and_measure(
    setup: SearchSetup, model: nn.Module, config: CompressionConfig, rec: TrialRecord
) -> None:
    """Fine-tune the compressed `model`, re-estimate its batch norms, evaluate it and measure its
    speed, onto `rec` (metrics, context, timings)."""
    seed, t1 = rec.seed, time.perf_counter()
    shape = architecture(model)
    with setup.lock.busy(), threads.watch() as chosen:
        rec.curve = setup.workload.finetune(model, seed, setup.device, kept_fraction(setup, rec))
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
    rec.metrics.update(measure_speed(setup, model, config, seed, rec.context))
    missing_objectives(setup.config.selection.objectives, rec.metrics)
    rec.timings["measure_s"] = time.perf_counter() - t2


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
        _train_and_measure(setup, model, config, rec)
        path = setup.weights_dir / f"trial-{number:05d}.pt"
        save_compressed(path, model, config, base_reference(setup))
        rec.weights = str(path)
    except (Exception, SystemExit) as exc:  # a trial's own failure must not end the search
        _fail(rec, exc)
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
            kept = kept_fraction(setup, rec)
            rec.metrics.update(setup.workload.screen(model, seed, setup.device, kept))
            missing_objectives(
                [o for o in cfg.selection.objectives if o != "fps"], rec.metrics
            )  # fps: screened as macs
    except Exception as exc:  # a config's own failure must not end the search
        rec.state, rec.reason = FAILED, f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        rec.timings["total_s"] = time.perf_counter() - t0
    return rec


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
