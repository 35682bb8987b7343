"""Runners timed side by side (`measure_fps`), under the protocol of `prunetune.measure`."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from prunetune.measure import Timing, time_interleaved
from prunetune.runtimes.runners import Runner

SAMPLE_S = 0.05  # seconds per timing sample in measure_fps (see there)


def measure_fps(
    candidates: Mapping[str, Runner],
    example_input: torch.Tensor,
    *,
    repeats: int = 21,
    warmup: int = 5,
    sample_s: float = SAMPLE_S,
) -> dict[str, Timing]:
    """Time runners side by side on `example_input` (its batch size is the batch): interleaved
    sample by sample (`prunetune.measure.time_interleaved`), each sample the mean of enough calls
    to last `sample_s`. All runners must use the same thread count.

    Why 50 ms samples: a model's first calls after another model ran are slow while its weights
    return to the caches (a (4,2) Net took 1.2 ms, then ~0.2 ms after ~10 calls, when it ran
    after the base Net). With 2 ms samples, interleaving with the base Net inflated the (4,2)
    Net's latency 3.4x (speedup 7x instead of 23x); 20 ms samples: +28 %; 50 ms: +6 %.
    Cost: about len(candidates) x repeats x sample_s.
    """
    threads = {runner.threads for runner in candidates.values()}
    if len(threads) != 1:
        raise ValueError(
            f"runners measured together must share one thread count, got {sorted(threads)}"
        )
    fns = {name: (lambda r=runner: r(example_input)) for name, runner in candidates.items()}
    return time_interleaved(
        fns,
        runtime={name: r.runtime for name, r in candidates.items()},
        threads=threads.pop(),
        batch_size=int(example_input.shape[0]),
        warmup=warmup,
        repeats=repeats,
        target_sample_s=sample_s,
    )
