"""Measurement: MACs/FLOPs, params, size, and the latency/FPS protocol.

Conventions (also in the README):
- MACs are multiply-accumulates of conv and linear layers, counted with torch's FlopCounterMode on
  the float model (FLOPs = 2 x MACs). torchvision's `_ops` figures are MACs.
- Latency: warm-up calls, then `repeats` samples, each the mean of enough calls to last a target
  time (runtimes.measure_fps uses ~50 ms: shorter samples overstate small models' latency);
  candidates measured together are interleaved sample by sample so they share the machine's noise.
  Reported: median, quartiles, spread = IQR / median, FPS = batch / median, threads, runtime.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


def _layers(model: nn.Module) -> dict[nn.Module, str]:
    """The layers MACs are reported for, by their `named_modules()` name: every conv/linear layer
    (whatever it carries, e.g. fake quantization's parametrizations and input quantizer) and every
    other leaf module outside them."""
    out: dict[nn.Module, str] = {}
    inside: list[str] = []
    for name, m in model.named_modules():
        if m in out or any(p == "" or name.startswith(f"{p}.") for p in inside):
            continue
        if isinstance(m, LAYER_TYPES):
            inside.append(name)
            out[m] = name
        elif not any(True for _ in m.children()):
            out[m] = name
    return out


@contextlib.contextmanager
def _per_layer_flops(
    model: nn.Module, counter: FlopCounterMode, per: dict[str, int]
) -> Iterator[None]:
    """While active, add to `per[name]` the FLOPs `counter` counts inside each leaf layer's forward
    (matched by module identity through forward hooks, so whatever name torch's own module tracker
    gives a layer does not matter)."""
    start: dict[nn.Module, list[int]] = {}

    def pre(m: nn.Module, _args) -> None:
        start.setdefault(m, []).append(counter.get_total_flops())

    def post(m: nn.Module, _args, _out) -> None:
        name = layers[m]
        per[name] = per.get(name, 0) + counter.get_total_flops() - start[m].pop()

    layers = _layers(model)
    handles = [
        h for m in layers for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def count_macs(
    model: nn.Module, example_input: torch.Tensor, *, per_module: bool = False
) -> int | tuple[int, dict[str, int]]:
    """Multiply-accumulates of one forward pass at the example's batch size divided by that batch
    size (so: MACs per image). With per_module, also MACs per leaf layer, keyed by its
    `model.named_modules()` name (layers with no MACs are left out); they sum to the total except
    for MACs of ops outside any leaf layer (e.g. a bare `torch.matmul` in a parent's forward)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    flops: dict[str, int] = {}
    try:
        with (
            counter,
            _per_layer_flops(model, counter, flops) if per_module else contextlib.nullcontext(),
        ):
            model(example_input)
    finally:
        model.train(was_training)
    batch = example_input.shape[0]
    total = counter.get_total_flops() // 2 // batch
    if not per_module:
        return int(total)
    return int(total), {n: int(f // 2 // batch) for n, f in flops.items() if f}


def count_params(model: nn.Module) -> int:
    """Number of parameters (float weights counted once even when fake-quantized)."""
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


@dataclass(frozen=True)
class Timing:
    """Latency statistics of one candidate under the protocol."""

    runtime: str
    threads: int
    batch_size: int
    median_ms: float
    p25_ms: float
    p75_ms: float
    repeats: int

    @property
    def fps(self) -> float:
        return self.batch_size / (self.median_ms / 1000.0)

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median."""
        return (self.p75_ms - self.p25_ms) / self.median_ms if self.median_ms else 0.0

    def as_dict(self) -> dict:
        return asdict(self) | {"fps": self.fps, "spread": self.spread}


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Temporarily run torch with `n` intra-op threads (nothing set when it runs with `n` already:
    a runner calls this per batch)."""
    old = torch.get_num_threads()
    if old == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _calls_per_sample(fn: Callable[[], object], target_s: float) -> int:
    t = time.perf_counter()
    fn()
    dt = max(time.perf_counter() - t, 1e-7)
    return max(1, min(10_000, int(target_s / dt)))


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    runtime: dict[str, str] | str,
    threads: int,
    batch_size: int,
    warmup: int = 5,
    repeats: int = 21,
    target_sample_s: float = 0.002,
) -> dict[str, Timing]:
    """Time several zero-argument callables side by side: sample k of every callable is taken
    before sample k+1 of any, so a noisy neighbour hits all of them alike."""
    with torch_threads(threads):
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        inner = {k: _calls_per_sample(fn, target_sample_s) for k, fn in fns.items()}
        samples: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                t = time.perf_counter()
                for _ in range(inner[k]):
                    fn()
                samples[k].append((time.perf_counter() - t) / inner[k] * 1000.0)
    out = {}
    for k, s in samples.items():
        q = statistics.quantiles(s, n=4) if len(s) > 1 else [s[0]] * 3
        rt = runtime if isinstance(runtime, str) else runtime[k]
        out[k] = Timing(rt, threads, batch_size, statistics.median(s), q[0], q[2], len(s))
    return out


def _runnable_now() -> int | None:
    """Tasks runnable on the machine at this instant besides the caller (/proc/loadavg's 4th
    field counts the reader too); None where there is no /proc/loadavg (not Linux)."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return max(0, int(f.read().split()[3].split("/")[0]) - 1)
    except (OSError, IndexError, ValueError):
        return None


def machine_load(reads: int = 5, pause_s: float = 0.002) -> dict[str, float]:
    """What else loads the machine now, read when an FPS measurement starts: `load_1m`, the
    1-minute load average (os.getloadavg; it still counts this user's own training of the last
    minute, which the quiet lock has paused), `runnable`, the median over `reads` reads (`pause_s`
    apart) of the tasks runnable besides the caller (Linux; absent elsewhere), and `cpus`, the
    CPUs this process may run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        cpus = os.cpu_count() or 1
    out = {"load_1m": round(os.getloadavg()[0], 2), "cpus": cpus}
    seen = []
    for i in range(reads):
        seen.append(_runnable_now())
        if i + 1 < reads:
            time.sleep(pause_s)
    if None not in seen:
        out["runnable"] = statistics.median(seen)
    return out
