"""Wall time of one search: the embedded Optuna backend vs the Ray Tune backend with 2 workers.

    python bench/ray_vs_optuna.py [--trials 12] [--repeats 3] [--out bench/results]

Each run is the real CLI (`python -m prunetune search ...`) in a fresh working directory, timed from
process start to exit, on tiny_cnn / digits (8x8 images; 12 trials of 3 fine-tune epochs on
1,000-image subsets, FPS from 5 samples). Three configurations, interleaved within each repeat so
they share the machine's noise (the order rotates between repeats):

- `optuna`     the embedded runner as it ships: one process, torch's default thread count;
- `optuna-1t`  the same with OMP_NUM_THREADS=1 (one torch thread), to separate the thread effect;
- `ray-2w`     `--backend ray --workers 2`: a local Ray, two one-CPU trial actors (Ray sets one
               torch thread per actor), QuietLock serialising timings against compute.

Same study seed everywhere, so every run evaluates the same warm-start and random start-up
configurations (TPE's later ones depend on the measured, noisy objectives; the count is reported).
The base model is trained once, before timing. Per run the study gives the trial phase (first
trial start to last trial end), how long trials waited to start computing (under Ray: for their
actors) and each trial's own compute (compress, fine-tune, measure); the rest of the wall time is
fixed cost (imports, data, base model load and measurement, Ray start-up and shut-down, MLflow,
final test-set scoring). 9-12 minutes with the defaults on a busy 2-core machine. Writes
ray_vs_optuna.md and ray_vs_optuna.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parent.parent
SETTINGS = [
    "--model",
    "tiny_cnn",
    "--dataset",
    "digits",
    "--base-epochs",
    "2",
    "--epochs",
    "3",
    "--subset",
    "1000",
    "--fps-repeats",
    "5",
    "--threads",
    "1",
    "--seed",
    "0",
]
CONFIGS = {
    "optuna": ([], {}),
    "optuna-1t": ([], {"OMP_NUM_THREADS": "1"}),
    "ray-2w": (["--backend", "ray", "--workers", "2"], {}),
}
ENV = {
    "RAY_AUTH_MODE": "disabled",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": "1000000000000",
}


def run_once(name: str, trials: int, work: Path) -> dict:
    """One timed search in a fresh directory; what the study says about where the time went."""
    extra, env = CONFIGS[name]
    cwd = work / name
    shutil.rmtree(cwd, ignore_errors=True)
    cwd.mkdir(parents=True)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "prunetune",
            "search",
            *SETTINGS,
            "--study",
            "bench",
            "--trials",
            str(trials),
            *extra,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **ENV, **env},
        timeout=1800,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    study = optuna.load_study(
        study_name="bench", storage=f"sqlite:///{cwd / 'mlruns' / 'optuna.db'}"
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == trials, f"{name}: {len(done)} of {trials} trials complete"
    phase = (
        max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
    ).total_seconds()
    timings = [t.user_attrs["record"]["timings"] for t in done]
    compute = sum(x["total_s"] for x in timings)
    # asked but not computing: queueing, actor start-up (Ray), result transport and tell/logging
    waits = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        - t.user_attrs["record"]["timings"]["total_s"]
        for t in done
    ]
    steady = phase - max(waits)
    return {
        "config": name,
        "wall_s": wall,
        "trial_phase_s": phase,
        "fixed_s": wall - phase,
        "trial_compute_s": compute,
        "overlap": compute / steady,
        "load_avg_1m": load,
        "first_wait_s": max(waits),
        "wait_median_s": statistics.median(waits),
        "steady_per_trial_s": steady / trials,
        "finetune_s_median": statistics.median(x.get("finetune_s", 0.0) for x in timings),
        "measure_s_median": statistics.median(x.get("measure_s", 0.0) for x in timings),
        "params": [t.params for t in sorted(done, key=lambda t: t.number)],
    }


def summary(runs: list[dict]) -> dict:
    out = {}
    for name in CONFIGS:
        mine = [r for r in runs if r["config"] == name]
        out[name] = {
            key: {
                "median": statistics.median(r[key] for r in mine),
                "min": min(r[key] for r in mine),
                "max": max(r[key] for r in mine),
            }
            for key in (
                "wall_s",
                "trial_phase_s",
                "fixed_s",
                "trial_compute_s",
                "overlap",
                "first_wait_s",
                "wait_median_s",
                "steady_per_trial_s",
                "finetune_s_median",
                "measure_s_median",
            )
        }
    return out


def identical_trials(runs: list[dict]) -> int:
    """How many trial numbers had the same configuration in every run."""
    return sum(
        all(r["params"][i] == runs[0]["params"][i] for r in runs)
        for i in range(len(runs[0]["params"]))
    )


def markdown(cmd: str, facts: dict, runs: list[dict], summ: dict, same: int, total_s: float) -> str:
    med = {n: summ[n]["wall_s"]["median"] for n in CONFIGS}
    rows = [
        "| config | wall s, median (min-max) | fixed s | trial phase s | longest wait s | "
        "steady s per trial | trial compute s | overlap | fine-tune s | measure s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in CONFIGS:
        s = summ[n]
        rows.append(
            f"| {n} | {s['wall_s']['median']:.1f} "
            f"({s['wall_s']['min']:.1f}-{s['wall_s']['max']:.1f}) | {s['fixed_s']['median']:.1f} | "
            f"{s['trial_phase_s']['median']:.1f} | {s['first_wait_s']['median']:.1f} | "
            f"{s['steady_per_trial_s']['median']:.2f} | {s['trial_compute_s']['median']:.1f} | "
            f"{s['overlap']['median']:.2f} | {s['finetune_s_median']['median']:.2f} | "
            f"{s['measure_s_median']['median']:.2f} |"
        )
    raw = [
        "| repeat | config | wall s | trial phase s | fixed s | load avg (1 min) at start |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    raw += [
        f"| {r['repeat']} | {r['config']} | {r['wall_s']:.1f} | {r['trial_phase_s']:.1f} | "
        f"{r['fixed_s']:.1f} | {r['load_avg_1m']:.1f} |"
        for r in runs
    ]
    return "\n".join(
        [
            "# Ray Tune backend vs embedded Optuna: wall time of one search",
            "",
            f"Command: `{cmd}` (all runs: {total_s / 60:.1f} min).",
            "",
            f"Machine: {facts['cpu']}, {facts['logical_cpus']} logical CPUs, shared with other "
            f"jobs (1-minute load average {facts['load_start']:.1f} at start, "
            f"{facts['load_end']:.1f} at end); {facts['versions']}; {facts['date']}.",
            "",
            f"Search: `prunetune search {shlex.join(SETTINGS)} --trials {runs[0]['trials']}`; "
            f"{len(runs) // len(CONFIGS)} repeat(s); configurations interleaved. {same} of the "
            f"{runs[0]['trials']} trials had the same configuration in every run (the warm-start "
            "and random start-up trials; TPE's later suggestions depend on the measured "
            "objectives, and FPS is noisy).",
            "",
            "Columns (medians over repeats): *fixed* = wall - trial phase (imports, data, base "
            "model, Ray start/stop, MLflow, final test scoring); *trial phase* = first trial asked "
            "to last trial told (from the study); *longest wait* = the largest time a trial was "
            "asked but not computing (under Ray: the first trials waiting for their actors to "
            "start); *steady s per trial* = (trial phase - longest wait) / trials; *trial compute* "
            "= sum of the trials' own compress + fine-tune + measure time; *overlap* = trial "
            "compute / (trial phase - longest wait), above 1 when trials ran at the same time; "
            "*fine-tune s* and *measure s* = median per trial (measure includes validation, runner "
            "building and waiting for the QuietLock).",
            "",
            *rows,
            "",
            f"Ratios of median wall time: ray-2w / optuna = {med['ray-2w'] / med['optuna']:.2f}, "
            f"ray-2w / optuna-1t = {med['ray-2w'] / med['optuna-1t']:.2f}, "
            f"optuna-1t / optuna = {med['optuna-1t'] / med['optuna']:.2f}.",
            "",
            "## Every run",
            "",
            *raw,
            "",
            "## Reading",
            "",
            *reading(summ),
            "",
        ]
    )


def reading(summ: dict) -> list[str]:
    """What the medians say, as sentences with the numbers in them."""
    m = {n: {k: v["median"] for k, v in summ[n].items()} for n in CONFIGS}
    o, o1, r = m["optuna"], m["optuna-1t"], m["ray-2w"]
    saving = {
        n: m[n]["steady_per_trial_s"] - r["steady_per_trial_s"] for n in ("optuna", "optuna-1t")
    }
    extra = {
        n: r["fixed_s"] + r["first_wait_s"] - m[n]["fixed_s"] - m[n]["first_wait_s"]
        for n in ("optuna", "optuna-1t")
    }

    def even(n: str) -> str:
        if saving[n] <= 0:
            return f"never pays off against {n} (whose steady per-trial time is not longer)"
        return f"pays off after about {max(0.0, extra[n]) / saving[n]:.0f} trials against {n}"

    return [
        f"- **Fixed cost.** Ray costs {extra['optuna-1t']:.1f} s more per invocation than the "
        f"embedded runner (optuna-1t): {r['fixed_s'] - o1['fixed_s']:.1f} s outside the trials "
        "(starting a local Ray: GCS, raylet, agents, idle workers; shutting it down) plus the "
        f"wait for the first trial actors ({r['first_wait_s']:.1f} s: each actor imports torch and "
        "prunetune and fetches the SearchSetup from the object store, on the same two busy "
        "cores). The reference figure of 3-4 s for `ray.init` is for an idle machine.",
        "- **Trials in parallel.** Once the actors were up, a trial cost "
        f"{r['steady_per_trial_s']:.2f} s of wall time under Ray vs {o1['steady_per_trial_s']:.2f} "
        f"s embedded with one thread ({o1['steady_per_trial_s'] / r['steady_per_trial_s']:.2f}x "
        f"faster, of an ideal 2x) and {o['steady_per_trial_s']:.2f} s with default threads. Short "
        "of 2x because each trial's own compute took "
        f"{r['trial_compute_s'] / o1['trial_compute_s']:.2f}x as long as alone: two actors, the "
        "driver (Optuna's sampler, MLflow logging, Tune's event loop) and the machine's other "
        "jobs share two cores, and the QuietLock makes each FPS measurement wait for the other "
        f"trial's compute and vice versa (median measure step {r['measure_s_median']:.2f} s vs "
        f"{o1['measure_s_median']:.2f} s, fine-tune {r['finetune_s_median']:.2f} s vs "
        f"{o1['finetune_s_median']:.2f} s); trials overlapped {r['overlap']:.2f}x (embedded: "
        f"{o1['overlap']:.2f}x, the rest being ask, tell and MLflow logging).",
        "- **Threads.** The embedded runner fine-tunes with torch's default thread count; on this "
        "shared 2-core machine one thread was "
        f"{o['finetune_s_median'] / max(o1['finetune_s_median'], 1e-9):.1f}x faster per trial "
        f"(fine-tune {o1['finetune_s_median']:.2f} s vs {o['finetune_s_median']:.2f} s). Ray "
        "actors get one thread each (one CPU reserved), so part of any Ray-vs-optuna gap is this "
        "thread effect, not parallelism; optuna-1t isolates it.",
        "- **Break-even** (extra fixed cost / steady time saved per trial), at these settings: "
        f"Ray {even('optuna')}; it {even('optuna-1t')}. Longer trials (bigger models, more "
        "fine-tune epochs) move it down; more than two cores or several machines are where the "
        "backend is for.",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument(
        "--work", default="/tmp/bench-work/ray_vs_optuna", help="scratch folder (outside the repo)"
    )
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PRUNETUNE_HOME", str(work / "home"))  # base model cache of this bench
    import torch

    t_start = time.perf_counter()
    facts = {
        "cpu": platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "load_start": os.getloadavg()[0],
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            facts["cpu"] = line.split(":", 1)[1].strip()
            break
    import mlflow
    import ray

    facts["versions"] = (
        f"python {platform.python_version()}, torch {torch.__version__}, optuna "
        f"{optuna.__version__}, ray {ray.__version__}, mlflow {mlflow.__version__}"
    )
    print("warm-up (base model, caches): one 1-trial search, untimed", file=sys.stderr, flush=True)
    run_once("optuna-1t", 1, work / "warmup")
    runs = []
    names = list(CONFIGS)
    for rep in range(args.repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            r = run_once(name, args.trials, work)
            r.update(repeat=rep + 1, trials=args.trials)
            runs.append(r)
            print(
                f"repeat {rep + 1} {name}: {r['wall_s']:.1f} s (trial phase "
                f"{r['trial_phase_s']:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    facts["load_end"] = os.getloadavg()[0]
    summ = summary(runs)
    same = identical_trials(runs)
    cmd = shlex.join(["python", "bench/ray_vs_optuna.py", *sys.argv[1:]])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    total = time.perf_counter() - t_start
    (out / "ray_vs_optuna.json").write_text(
        json.dumps(
            {
                "command": cmd,
                "settings": SETTINGS,
                "configs": {k: {"flags": v[0], "env": v[1]} for k, v in CONFIGS.items()},
                "machine": facts,
                "identical_trials": same,
                "total_s": total,
                "summary": summ,
                "runs": [{k: v for k, v in r.items() if k != "params"} for r in runs],
            },
            indent=2,
        )
    )
    (out / "ray_vs_optuna.md").write_text(markdown(cmd, facts, runs, summ, same, total))
    print(f"wrote {out / 'ray_vs_optuna.md'} and .json", file=sys.stderr)


if __name__ == "__main__":
    main()
