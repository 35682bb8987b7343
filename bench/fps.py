"""FPS of the MNIST Net and two pruned shapes on each runtime, side by side.

    python bench/fps.py [--repeats N] [--rounds R] [--out bench/results]

One process, one thread, batch 1 (latency) and batch 64 (throughput). Every round times all
candidates of one batch size interleaved sample by sample (`prunetune.runtimes.measure_fps`), so
they share the machine's noise; R rounds give the spread of the speedup ratios, which survive a
noisy machine better than absolute FPS. Candidates:

- the base Net (conv 16, 32 filters; fc 25,088 -> 1,024 -> 10) on torch fp32, ONNX Runtime fp32 and
  ONNX Runtime int8 (static, calibrated on 128 real mnist5k images);
- the (4, 2)- and (1, 1)-filter Nets (what pruning 12/30 and 15/31 filters leaves) on the same
  three runtimes.

Weights are untrained (seed 0): speed does not depend on their values. Writes fps.md and fps.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
from pathlib import Path

import _common
import onnxruntime
import torch
from torch import nn

from prunetune.data import create_dataset
from prunetune.measure import Timing, count_macs
from prunetune.models import build_for
from prunetune.runtimes import RUNTIME_DESCRIPTIONS, SAMPLE_S, Runner, make_runner, measure_fps

BATCHES = (1, 64)
BASE = "base"
MODELS = (BASE, "(4,2)", "(1,1)")
RUNTIMES = ("torch", "onnxruntime", "onnxruntime-int8")
# candidate -> (model key, runtime)
CANDIDATES: dict[str, tuple[str, str]] = {f"{m} / {r}": (m, r) for m in MODELS for r in RUNTIMES}
TORCH_BASE = "base / torch"


def reference(name: str) -> str:
    """The denominator of a candidate's speedup: fp32 candidates against the base on the same
    runtime; int8 against the same model's fp32 on ONNX Runtime (does int8 pay off for it?)."""
    model, runtime = CANDIDATES[name]
    if runtime == "onnxruntime-int8":
        return f"{model} / onnxruntime"
    return f"{BASE} / {runtime}"


def pruned_net(c1: int, c2: int) -> nn.Sequential:
    """The Net with `c1` and `c2` conv filters left (fc1 shrinks to c2 x 28 x 28 inputs)."""
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(c2 * 28 * 28, 1024),
        nn.ReLU(),
        nn.Linear(1024, 10),
    ).eval()


def build_runners(threads: int) -> tuple[dict[str, Runner], dict[str, int]]:
    """Runners of every candidate, and MACs per image of every model."""
    torch.manual_seed(0)
    models = {
        BASE: build_for("mnist_net", (1, 28, 28), 10).eval(),
        "(4,2)": pruned_net(4, 2),
        "(1,1)": pruned_net(1, 1),
    }
    bundle = create_dataset("mnist5k")
    example = bundle.example_input(1)
    calibration = list(bundle.train.tensors()[0][:128].split(16))
    runners = {
        name: make_runner(
            models[key], runtime, example, threads=threads, calibration_batches=calibration
        )
        for name, (key, runtime) in CANDIDATES.items()
    }
    macs = {key: int(count_macs(m, example)) for key, m in models.items()}
    return runners, macs


def measure(
    runners: dict[str, Runner], *, rounds: int, repeats: int
) -> dict[int, list[dict[str, Timing]]]:
    """batch -> one dict of Timings per round (all candidates interleaved within a round)."""
    inputs = {
        b: torch.randn(b, 1, 28, 28, generator=torch.Generator().manual_seed(b)) for b in BATCHES
    }
    out: dict[int, list[dict[str, Timing]]] = {b: [] for b in BATCHES}
    for r in range(rounds):
        for b in BATCHES:
            out[b].append(measure_fps(runners, inputs[b], repeats=repeats, warmup=5))
            print(
                f"round {r + 1}/{rounds} batch {b}: "
                + ", ".join(f"{k} {t.fps:,.0f}" for k, t in out[b][-1].items()),
                flush=True,
            )
    return out


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(raw: dict[int, list[dict[str, Timing]]]) -> dict[int, dict[str, dict]]:
    """Per batch and candidate: FPS, median ms and IQR spread (medians over rounds, FPS range),
    and the speedup ratios (per round, then median and min..max over rounds)."""
    out: dict[int, dict[str, dict]] = {}
    for b, rounds in raw.items():
        out[b] = {}
        for name, (_, runtime) in CANDIDATES.items():
            ref = reference(name)
            out[b][name] = {
                "runtime": runtime,
                "fps": _stats([r[name].fps for r in rounds]),
                "median_ms": statistics.median(r[name].median_ms for r in rounds),
                "spread": statistics.median(r[name].spread for r in rounds),
                "reference": ref,
                "speedup": _stats([r[name].fps / r[ref].fps for r in rounds]),
                "vs_base_torch": _stats([r[name].fps / r[TORCH_BASE].fps for r in rounds]),
            }
    return out


def machine_facts(threads: int) -> dict:
    return {
        **_common.cpu_facts(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "threads": threads,
        "load_average": os.getloadavg(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _load(values: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in values)


def _range(s: dict[str, float], fmt: str) -> str:
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}..{s['max']:{fmt}})"


def acceptance(summary: dict[int, dict[str, dict]]) -> list[tuple[str, str, bool | None]]:
    """(check, measured, passed) for the project's acceptance numbers (None: informational)."""
    b1 = summary[1]
    base = b1["base / torch"]
    pruned = b1["(4,2) / torch"]["speedup"]
    int8_ort = b1["base / onnxruntime-int8"]["speedup"]
    int8_torch = b1["base / onnxruntime-int8"]["vs_base_torch"]
    return [
        (
            "base Net, batch 1, torch fp32",
            f"{base['fps']['median']:,.0f} FPS, IQR spread {base['spread']:.0%}, "
            f"rounds {base['fps']['min']:,.0f}..{base['fps']['max']:,.0f}",
            None,
        ),
        (
            "(4,2) >= 10x the base's batch-1 FPS on torch",
            f"{_range(pruned, '.1f')}x",
            pruned["min"] >= 10,
        ),
        (
            "base int8 faster than its fp32 at batch 1 (ONNX Runtime int8 / ONNX Runtime fp32)",
            f"{_range(int8_ort, '.2f')}x",
            int8_ort["min"] > 1,
        ),
        (
            "base int8 faster than torch fp32 at batch 1 (ONNX Runtime int8 / torch fp32)",
            f"{_range(int8_torch, '.2f')}x",
            int8_torch["min"] > 1,
        ),
    ]


def render_md(
    summary: dict[int, dict[str, dict]],
    facts: dict,
    macs: dict[str, int],
    kernels: list[str],
    command: str,
    rounds: int,
    repeats: int,
) -> str:
    lines = [
        "# FPS: MNIST Net and pruned shapes per runtime",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {facts['cpu']} ({facts['logical_cpus']} logical CPUs, "
        f"{', '.join(facts['isa'])}), Python {facts['python']}, torch {facts['torch']}, "
        f"onnxruntime {facts['onnxruntime']}; {facts['threads']} thread; {facts['date']}; "
        f"load average (1, 5, 15 min) at start {_load(facts['load_average'])}, "
        f"at end {_load(facts['load_average_end'])}.",
        "",
        f"Protocol: {rounds} round(s); in each round all candidates of one batch size are timed "
        f"interleaved, {repeats} samples each after 5 warm-up calls; a sample is the mean of "
        f"enough calls to last ~{SAMPLE_S * 1000:.0f} ms (shorter samples overstate small "
        "models' latency while their weights return to the caches after another model ran: "
        "with 2 ms samples the (4,2) Net looked 3x slower). FPS = batch / median sample "
        "latency. Shown: the median over rounds (min..max over rounds for FPS and ratios); IQR "
        "spread = interquartile range / median within a round (median over rounds). Weights "
        "are untrained (speed does not depend on their values); int8 is calibrated on 128 "
        "mnist5k images.",
        "",
        f"Quantized ops in the base Net's optimised ONNX Runtime int8 graph: {', '.join(kernels)}.",
        "",
        "Runtimes: " + "; ".join(f"`{k}` = {v}" for k, v in RUNTIME_DESCRIPTIONS.items()) + ".",
        "",
        "## Acceptance checks",
        "",
        "| check | measured | result |",
        "|---|---|---|",
    ]
    for check, measured, passed in acceptance(summary):
        verdict = "info" if passed is None else ("pass" if passed else "**FAIL**")
        lines.append(f"| {check} | {measured} | {verdict} |")
    lines += [
        "",
        "A check passes only if it holds in every round (min over rounds). Speedups: "
        "fp32 candidates against the base on the same runtime, int8 against the same model's "
        "fp32 on ONNX Runtime; ratios are taken per round, then median (min..max).",
    ]
    for b, rows in summary.items():
        lines += [
            "",
            f"## Batch {b}",
            "",
            "| model / runtime | MACs | FPS (rounds min..max) | median ms | IQR spread "
            "| speedup | against | vs base / torch |",
            "|---|---:|---:|---:|---:|---:|---|---:|",
        ]
        for name, row in rows.items():
            lines.append(
                f"| {name} | {macs[CANDIDATES[name][0]]:,} | {_range(row['fps'], ',.0f')} "
                f"| {row['median_ms']:.3f} | {row['spread']:.0%} "
                f"| {_range(row['speedup'], '.2f')}x | {row['reference']} "
                f"| {_range(row['vs_base_torch'], '.2f')}x |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=21, help="samples per candidate per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per batch size")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    threads = 1
    command = shlex.join(["python", "bench/fps.py", *(sys.argv[1:] if argv is None else argv)])
    facts = machine_facts(threads)
    runners, macs = build_runners(threads)
    raw = measure(runners, rounds=args.rounds, repeats=args.repeats)
    facts["load_average_end"] = os.getloadavg()
    summary = summarize(raw)
    kernels = list(runners["base / onnxruntime-int8"].kernels)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fps.md").write_text(
        render_md(summary, facts, macs, kernels, command, args.rounds, args.repeats)
    )
    (args.out / "fps.json").write_text(
        json.dumps(
            {
                "command": command,
                "machine": facts,
                "rounds": args.rounds,
                "repeats": args.repeats,
                "macs": macs,
                "int8_kernels": kernels,
                "acceptance": [
                    {"check": c, "measured": m, "passed": p} for c, m, p in acceptance(summary)
                ],
                "summary": {str(b): rows for b, rows in summary.items()},
                "raw": {
                    str(b): [{k: t.as_dict() for k, t in r.items()} for r in rs]
                    for b, rs in raw.items()
                },
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {args.out / 'fps.md'} and {args.out / 'fps.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
