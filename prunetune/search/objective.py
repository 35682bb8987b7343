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
from torch.utils.data import Subset

from prunetune.compress import CompressionConfig, compress, compressed_size_bytes, inventory, save_compressed, size_bytes
from prunetune.config import SearchConfig
from prunetune.data import BalancedSubsetSampler, DataBundle, create_dataset
from prunetune.measure import count_macs, count_params
from prunetune.models import (BaseModel, Recipe, evaluate, get_base_model, recalibrate_bn, resolve_device,
                              train)
from prunetune.models.training import DivergedError
from prunetune.runtimes import make_runner, measure_fps
from prunetune.search import strategies
from prunetune.search.quiet import QuietLock
from prunetune.search.records import COMPLETE, FAILED, REJECTED, TrialRecord
from prunetune.spaces import SearchSpace

CALIBRATION_BATCHES = 8
RECALIBRATION_IMAGES = 1000  # batch-norm statistics after fine-tuning (models without batch norms skip it)
SCREEN_IMAGES = 300  # screening: batch-norm statistics re-estimated on this many training images
SCREEN_VAL_IMAGES = 500  # ... and accuracy on (at most) this many validation images


@dataclass
class SearchSetup:
    """What every trial of one search shares. Picklable (Ray ships it to workers once); `runners`,
    the base model's runners keyed by (runtime, threads), is left out of the pickle (ONNX Runtime
    sessions do not travel) and built again where needed. `device`: where trials train."""

    config: SearchConfig
    bundle: DataBundle
    base: BaseModel
    space: SearchSpace
    base_metrics: dict
    weights_dir: Path
    skipped_layers: list
    device: str = "cpu"
    runners: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "runners"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, runners={})

    @property
    def lock(self) -> QuietLock:
        return QuietLock()

    def example_input(self) -> torch.Tensor:
        return self.bundle.example_input(1)


def trial_seed(study_seed: int, number: int) -> int:
    """Deterministic per-trial seed (subset draws, fine-tuning, calibration)."""
    return (study_seed * 1_000_003 + number * 7919 + 17) % (2**31 - 1)


def base_recipe(cfg: SearchConfig) -> Recipe:
    return Recipe(epochs=cfg.base_epochs, lr=1e-3, batch_size=64)


def build_space(cfg: SearchConfig, inv) -> SearchSpace:
    """The space from `--space FILE` (checked against the model) or derived from the inventory."""
    if cfg.space:
        space = SearchSpace.from_yaml(cfg.space)
        space.check_fits(inv)
        space.model = space.model or cfg.model
        return space
    return SearchSpace.from_inventory(inv, granularity=cfg.granularity, ratio_min=cfg.ratio_min,
                                      ratio_max=cfg.ratio_max, ratio_step=cfg.ratio_step,
                                      round_to=cfg.round_to, bits=cfg.bits, importance=cfg.importance,
                                      model=cfg.model)


def prepare_search(cfg: SearchConfig, *, weights_dir: Path, log=lambda m: None) -> SearchSetup:
    """Load data and the base model (training and caching it if needed), derive the space,
    measure the base model. The device (`cfg.device`; with Ray the driver's own, as trials get
    theirs from --gpus-per-trial) is decided once, first: a CUDA device that is not there is a
    ConfigError before anything is loaded. Raises PrunetuneError subclasses for user mistakes."""
    # under Ray the driver may have no GPU of its own: "auto" unless the user said cpu
    device = resolve_device(cfg.device if cfg.backend != "ray" or cfg.device == "cpu" else "auto")
    bundle = create_dataset(cfg.dataset, data_root=cfg.data_root)
    base = get_base_model(cfg.model, bundle, recipe=base_recipe(cfg), seed=cfg.base_seed,
                          checkpoint=cfg.checkpoint, log=log, device=device)
    example = bundle.example_input(1)
    inv = inventory(base.model, example)
    space = strategies.make_space(cfg, build_space(cfg, inv), base.model, example, bundle)
    setup = SearchSetup(config=cfg, bundle=bundle, base=base, space=space, base_metrics={},
                        weights_dir=weights_dir, skipped_layers=list(inv.skipped), device=str(device))
    setup.base_metrics = measure_base(setup)
    return setup


def calibration_batches(bundle: DataBundle, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(bundle.train), generator=g)[:CALIBRATION_BATCHES * 16]
    xs = torch.stack([bundle.train[int(i)][0] for i in idx])
    return list(xs.split(16))


def _runner(setup: SearchSetup, model: nn.Module, bits: dict | None, seed: int):
    cfg = setup.config
    calib = calibration_batches(setup.bundle, seed) if cfg.runtime.endswith("int8") else None
    return make_runner(model, cfg.runtime, setup.example_input(), threads=cfg.threads,
                       calibration_batches=calib, layer_bits=bits)


def _base_runner(setup: SearchSetup):
    """The base model's runner on the setup's runtime and threads, built once per setup and
    process (ONNX export and int8 calibration cost) and kept in `setup.runners`."""
    key = (setup.config.runtime, setup.config.threads)
    if key not in setup.runners:  # the uncompressed reference: every layer float, on the same runtime
        float_bits = {name: 32 for name in setup.space.quant_layers}
        setup.runners[key] = _runner(setup, setup.base.model, float_bits, setup.config.seed)
    return setup.runners[key]


def measure_base(setup: SearchSetup) -> dict:
    """The base model's reference numbers (accuracy from its checkpoint metadata)."""
    model, example = setup.base.model, setup.example_input()
    macs = count_macs(model, example)
    m = setup.base.meta.get("metrics", {})
    with setup.lock.quiet():
        timing = measure_fps({"base": _base_runner(setup)}, example,
                             repeats=max(setup.config.fps_repeats, 21))["base"]
    return {"accuracy": m.get("val_accuracy"), "test_accuracy": m.get("test_accuracy"),
            "macs": macs, "flops": 2 * macs, "bitops": macs * 32 * 32, "params": count_params(model),
            "size_bytes": size_bytes(model, {}), "fps": timing.fps, "latency_ms": timing.median_ms,
            "fps_spread": timing.spread, "speedup": 1.0, "runtime": setup.config.runtime,
            "threads": setup.config.threads, "device": setup.device}


def _bitops(per_layer_macs: dict[str, int], bits: dict[str, int], total_macs: int) -> int:
    """MACs x weight bits x activation bits (activations 8-bit where the weights are quantized)."""
    counted = sum(per_layer_macs.values())
    ops = sum(m * bits.get(n, 32) * (8 if bits.get(n, 32) <= 8 else 32) for n, m in per_layer_macs.items())
    return int(ops + (total_macs - counted) * 32 * 32)


def run_trial(setup: SearchSetup, params: dict, number: int, *, replay_of: int | None = None) -> TrialRecord:
    """Run trial `number` end to end (its weights: trial-NUMBER.pt). A trial re-running trial
    `replay_of` uses that trial's seed. Never raises for a trial's own failure: the record says
    `failed` (with the reason and the full traceback) or `rejected` (a constraint broken before
    any training)."""
    cfg = setup.config
    seed = trial_seed(cfg.seed, number if replay_of is None else replay_of)
    rec = TrialRecord(number=number, state=COMPLETE, params=dict(params), seed=seed, replay_of=replay_of,
                      device=setup.device)
    t0 = time.perf_counter()
    try:
        example = setup.example_input()
        with setup.lock.busy():  # compute, like training: never during another trial's timing
            config = setup.space.decode(params)  # a sweep's decode may scan or rank (strategies.py)
            rec.config = config.as_dict()
            model = compress(setup.base.model, config, example, data=_importance_data(setup, seed), seed=seed)
        macs, per_layer = count_macs(model, example, per_module=True)
        rec.metrics.update(macs=macs, flops=2 * macs, bitops=_bitops(per_layer, config.bits, macs),
                           params=count_params(model), size_bytes=compressed_size_bytes(model, config))
        rec.timings["compress_s"] = time.perf_counter() - t0
        if cfg.max_flops is not None and 2 * macs > cfg.max_flops:
            rec.state, rec.reason = REJECTED, f"flops {2 * macs:,} > max_flops {cfg.max_flops:,.0f}"
            return rec
        t1 = time.perf_counter()
        rec.curve = _finetune(setup, model, seed)
        rec.timings["finetune_s"] = time.perf_counter() - t1
        t_bn = time.perf_counter()
        if _recalibrate(setup, model, seed):
            rec.timings["recalibrate_s"] = time.perf_counter() - t_bn
        t2 = time.perf_counter()
        with setup.lock.busy():
            rec.metrics["accuracy"] = evaluate(model, setup.bundle.val, device=setup.device)["accuracy"]
        rec.metrics.update(_measure_speed(setup, model, config, seed))
        rec.timings["measure_s"] = time.perf_counter() - t2
        path = setup.weights_dir / f"trial-{number:05d}.pt"
        save_compressed(path, model, config, base_reference(setup))
        rec.weights = str(path)
    except DivergedError as exc:
        rec.state, rec.reason = FAILED, f"diverged: {exc}"
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


def screen_trial(setup: SearchSetup, params: dict, number: int) -> TrialRecord:
    """The cheap fidelity of multi-fidelity screening: compress, re-estimate the batch-norm
    statistics on SCREEN_IMAGES class-balanced training images, score on the first
    SCREEN_VAL_IMAGES validation images. No fine-tuning, no FPS, no weights written. Never raises
    for the config's own failure (the record says `failed` or `rejected`, as run_trial's)."""
    cfg = setup.config
    seed = trial_seed(cfg.seed, number)
    rec = TrialRecord(number=number, state=COMPLETE, params=dict(params), seed=seed)
    t0 = time.perf_counter()
    try:
        config = setup.space.decode(params)
        rec.config = config.as_dict()
        example, bundle = setup.example_input(), setup.bundle
        with setup.lock.busy():
            model = compress(setup.base.model, config, example, data=_importance_data(setup, seed), seed=seed)
            macs, per_layer = count_macs(model, example, per_module=True)
            rec.metrics.update(macs=macs, flops=2 * macs, bitops=_bitops(per_layer, config.bits, macs),
                               params=count_params(model), size_bytes=compressed_size_bytes(model, config))
            if cfg.max_flops is not None and 2 * macs > cfg.max_flops:
                rec.state, rec.reason = REJECTED, f"flops {2 * macs:,} > max_flops {cfg.max_flops:,.0f}"
                return rec
            recalibrate_bn(model, bundle.train, sampler=recalibration_sampler(bundle, seed, SCREEN_IMAGES),
                           batch_size=cfg.batch_size, device=setup.device)
            val = Subset(bundle.val, range(min(SCREEN_VAL_IMAGES, len(bundle.val))))
            rec.metrics["accuracy"] = evaluate(model, val, device=setup.device)["accuracy"]
    except Exception as exc:  # a config's own failure must not end the search
        rec.state, rec.reason = FAILED, f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        rec.timings["total_s"] = time.perf_counter() - t0
    return rec


def base_reference(setup: SearchSetup) -> dict:
    """What a compressed-model file needs to rebuild its architecture."""
    return {"model": setup.config.model, "dataset": setup.bundle.name,
            "input_shape": list(setup.bundle.input_shape), "num_classes": setup.bundle.num_classes,
            "base_checkpoint": str(setup.base.path) if setup.base.path else None}


def _importance_data(setup: SearchSetup, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A few class-balanced batches for data-driven criteria (taylor); cheap."""
    sampler = BalancedSubsetSampler(setup.bundle.train_targets, per_class=8, seed=seed)
    idx = list(sampler)
    xs = torch.stack([setup.bundle.train[i][0] for i in idx])
    ys = torch.stack([torch.as_tensor(setup.bundle.train[i][1]) for i in idx])
    return list(zip(xs.split(32), ys.split(32)))


def _finetune(setup: SearchSetup, model: nn.Module, seed: int) -> list[float]:
    cfg = setup.config
    if cfg.epochs == 0:
        return []
    per_class = max(1, cfg.subset // setup.bundle.num_classes)
    sampler = BalancedSubsetSampler(setup.bundle.train_targets, per_class=per_class, seed=seed)
    recipe = Recipe(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, distill_alpha=cfg.distill)
    with setup.lock.busy():
        hist = train(model, setup.bundle.train, recipe, seed=seed, sampler=sampler, device=setup.device,
                     teacher=setup.base.model if cfg.distill > 0 else None)
    return hist.loss


def recalibration_sampler(bundle: DataBundle, seed: int, images: int = RECALIBRATION_IMAGES) -> BalancedSubsetSampler:
    """The class-balanced training images (about `images` of them) on which the batch-norm
    statistics of the model fine-tuned with `seed` are re-estimated: a draw of its own."""
    return BalancedSubsetSampler(bundle.train_targets, per_class=max(1, images // bundle.num_classes), seed=seed + 1)


def _recalibrate(setup: SearchSetup, model: nn.Module, seed: int) -> int:
    """Batch-norm statistics re-estimated on a class-balanced sample of the training images
    (up to RECALIBRATION_IMAGES, at most the fine-tune subset); returns the number of batch norms."""
    sampler = recalibration_sampler(setup.bundle, seed, min(setup.config.subset, RECALIBRATION_IMAGES))
    with setup.lock.busy():
        return recalibrate_bn(model, setup.bundle.train, sampler=sampler, batch_size=setup.config.batch_size,
                              device=setup.device)


def _measure_speed(setup: SearchSetup, model: nn.Module, config: CompressionConfig, seed: int) -> dict:
    cfg = setup.config
    example = setup.example_input()
    with setup.lock.busy():  # building runners (ONNX export, int8 calibration) is compute too
        candidate = _runner(setup, model, config.bits, seed)
        base = _base_runner(setup)
    with setup.lock.quiet():
        t = measure_fps({"trial": candidate, "base": base}, example, repeats=cfg.fps_repeats)
    return {"fps": t["trial"].fps, "latency_ms": t["trial"].median_ms, "fps_spread": t["trial"].spread,
            "speedup": t["trial"].fps / t["base"].fps}
