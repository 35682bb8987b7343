"""The speed metrics of a search: the base model's reference numbers (`measure_base`) and a trial's
FPS measured side by side with the base's (`measure_speed`), each on the search's runtime and
threads, inside the machine's quiet window (the QuietLock: no training meanwhile)."""

from __future__ import annotations

from torch import nn

from prunetune.compress import CompressionConfig, size_bytes
from prunetune.measure import count_macs, count_params, machine_load
from prunetune.runtimes import make_runner, measure_fps
from prunetune.search.setup import SearchSetup


def _runner(setup: SearchSetup, model: nn.Module, bits: dict | None, seed: int):
    """A runner of `model` on the search's runtime and threads (int8 runtimes calibrated with the
    workload's batches of `seed`), weight bits per layer `bits`."""
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


def base_runner(setup: SearchSetup):
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
            {"base": base_runner(setup)},
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


def measure_speed(
    setup: SearchSetup, model: nn.Module, config: CompressionConfig, seed: int, context: dict
) -> dict:
    """FPS of the trial's model and the base's, side by side (the speed metrics); the machine's
    load at that time goes to `context`."""
    cfg = setup.config
    example = setup.example_input()
    with setup.lock.busy():  # building runners (ONNX export, int8 calibration) is compute too
        candidate = _runner(setup, model, config.bits, seed)
        base = base_runner(setup)
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
