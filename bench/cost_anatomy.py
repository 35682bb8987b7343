"""Where a search trial's time goes, how many trials an hour fit, and how noisy FPS is.

    python bench/cost_anatomy.py [--quick] [--trials 6] [--fps-reps 8]

Part 1: a default search (`prunetune search` defaults: mnist_net on mnist5k, objectives accuracy,
FLOPs and FPS, bits {32, 8, 6, 4}, 3 fine-tune epochs on 2,000 images (the default when the
committed results were made; now 2,500), FPS with 11 samples, torch runtime, training on torch's
default threads) run through `run_search` with an MLflow tracker
(SQLite store in the scratch directory). Per trial: the record's timings (compress_s: prune +
fake-quant + MAC count; finetune_s; measure_s: validation accuracy + runner build + interleaved FPS
timing against the base; total_s also holds saving the weights), the tracker's time in
`on_trial_end` (its `.seconds` before/after), and the rest of the loop (ask/tell on the SQLite
study, budget lock) as the iteration's wall time minus both. The first 3 trials are prunetune's
warm start (ratios 0 at 8 bits, 0.5 float, 0.75 at 8 bits), the others TPE's random start-up.

Part 2: FPS measurement noise. The base Net and an L2-pruned (4, 2) Net are timed together as a
trial is (`measure_fps`, interleaved, 50 ms samples, batch 1, torch, 1 thread), R times in a row;
the coefficient of variation (sd / mean over the R measurements) of each model's FPS and of the
speedup ratio, for 11 samples per measurement (the default `fps_repeats`) and 3 (what the search
benches use when FPS is not an objective). Writes bench/results/cost_anatomy.md and .json.
"""

from __future__ import annotations

import _common

_common.ensure_env()

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402


class TimedTracker:
    """Wraps an MlflowTracker; remembers the tracking seconds of every call."""

    def __init__(self, tracker) -> None:
        self.t = tracker
        self.start_s = self.end_s = 0.0
        self.per_trial: dict[int, float] = {}

    def on_search_start(self, setup, study) -> None:
        s = self.t.seconds
        self.t.on_search_start(setup, study)
        self.start_s = self.t.seconds - s

    def on_trial_end(self, record, study) -> None:
        s = self.t.seconds
        self.t.on_trial_end(record, study)
        self.per_trial[record.number] = self.t.seconds - s

    def on_search_end(self, result, study, *, outcome) -> None:
        s = self.t.seconds
        self.t.on_search_end(result, study, outcome=outcome)
        self.end_s = self.t.seconds - s


KEYS = ("compress_s", "finetune_s", "measure_s", "tracking_s", "other_s", "iteration_s")


def cv(xs: list[float]) -> float:
    return statistics.stdev(xs) / statistics.fmean(xs) if len(xs) > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--fps-reps", type=int, default=8)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="re-render the .md from the recorded .json (no compute)",
    )
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.report_only:
        out = _common.scratch("cost", True) if args.quick else _common.RESULTS
        render(json.loads((out / "cost_anatomy.json").read_text()), out, regenerated=True)
        return 0
    if args.quick:
        args.trials, args.fps_reps = 2, 3
    import os

    import optuna
    import torch

    from prunetune.compress import prune
    from prunetune.config import SearchSettings
    from prunetune.search.optuna_runner import run_search
    from prunetune.search.tracking import MlflowTracker

    facts = _common.machine_facts()
    facts["torch_threads_training"] = torch.get_num_threads()
    workdir = _common.scratch("cost", args.quick)
    os.chdir(workdir)
    overrides = {"epochs": 1, "subset": 200} if args.quick else {}
    cfg = SearchSettings.from_flat(
        study="cost-anatomy",
        storage=f"sqlite:///{workdir / 'optuna.db'}",
        tracking_uri=f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}",
        trials=args.trials,
        seed=0,
        **overrides,
    )
    try:  # a fresh study every run
        optuna.delete_study(study_name=cfg.study_name, storage=cfg.stores.storage_url)
    except KeyError:
        pass
    tracker = TimedTracker(MlflowTracker(cfg.stores.tracking_uri))
    marks: list[float] = []
    t0 = time.perf_counter()
    result = run_search(
        cfg,
        listeners=[tracker],
        progress=lambda done, total, study: marks.append(time.perf_counter()),
    )
    t_end = time.perf_counter()
    # iteration k runs from marks[k] to marks[k+1]; the last progress mark is the final check
    first_trial_at = marks[0] - t0
    recs = sorted(
        (r for r in result.records if r.state in ("complete", "failed", "rejected")),
        key=lambda r: r.number,
    )
    per = []
    for i, r in enumerate(recs):
        it = (marks[i + 1] - marks[i]) if i + 1 < len(marks) else float("nan")
        tr = tracker.per_trial.get(r.number, 0.0)
        tm = r.timings
        per.append(
            {
                "number": r.number,
                "state": r.state,
                "ratios": r.config.get("ratios"),
                "bits": sorted(set((r.config.get("bits") or {}).values())),
                **tm,
                "tracking_s": tr,
                "iteration_s": it,
                "other_s": it - tm.get("total_s", 0.0) - tr,
                "accuracy": r.metrics.get("accuracy"),
                "macs": r.metrics.get("macs"),
                "speedup": r.metrics.get("speedup"),
            }
        )
    mean = {k: statistics.fmean([p.get(k, 0.0) for p in per]) for k in KEYS}
    per_hour = 3600 / mean["iteration_s"]

    screen = screen_costs(cfg, recs)
    # Part 2: FPS noise
    from prunetune.runtimes import make_runner, measure_fps

    from prunetune.data import create_dataset
    from prunetune.models import Recipe, get_base_model

    bundle = create_dataset("mnist5k")
    example = bundle.example_input(1)
    base = get_base_model(
        "mnist_net", bundle, recipe=Recipe(epochs=5, lr=1e-3, batch_size=64), seed=0
    ).model
    small = prune(base, {"0": 0.75, "2": 1 - 2 / 32}, example)
    runners = {
        "base": make_runner(base, "torch", example, threads=1),
        "(4,2)": make_runner(small, "torch", example, threads=1),
    }
    noise = {}
    for repeats in (11, 3):
        ms_ = []
        for _ in range(args.fps_reps):
            t = measure_fps(
                {"trial": runners["(4,2)"], "base": runners["base"]}, example, repeats=repeats
            )
            ms_.append(
                {
                    "base": t["base"].fps,
                    "(4,2)": t["trial"].fps,
                    "speedup": t["trial"].fps / t["base"].fps,
                    "iqr_base": t["base"].spread,
                    "iqr_small": t["trial"].spread,
                }
            )
        noise[repeats] = {
            "raw": ms_,
            "cv_base": cv([m["base"] for m in ms_]),
            "cv_small": cv([m["(4,2)"] for m in ms_]),
            "cv_speedup": cv([m["speedup"] for m in ms_]),
            "base_fps": statistics.median(m["base"] for m in ms_),
            "small_fps": statistics.median(m["(4,2)"] for m in ms_),
            "speedup": statistics.median(m["speedup"] for m in ms_),
            "speedup_range": (min(m["speedup"] for m in ms_), max(m["speedup"] for m in ms_)),
            "iqr_base": statistics.median(m["iqr_base"] for m in ms_),
            "iqr_small": statistics.median(m["iqr_small"] for m in ms_),
        }
    _common.finish_facts(facts)
    data = {
        "command": _common.command("cost_anatomy.py", argv),
        "machine": facts,
        "quick": args.quick,
        "fps_reps": args.fps_reps,
        "trials": per,
        "mean": mean,
        "trials_per_hour": per_hour,
        "startup_s": first_trial_at,
        "end_s": t_end - marks[-1],
        "tracking_start_s": tracker.start_s,
        "tracking_end_s": tracker.end_s,
        "fps_noise": {str(k): v for k, v in noise.items()},
        "config": cfg.to_stored(),
        "screen": screen,
    }
    render(data, workdir if args.quick else None)
    return 0


def screen_costs(cfg, recs) -> list[dict]:
    """Part 3: the cheap fidelity of screening (prune, batch norms re-estimated, part of the
    validation split; `objective.screen_trial`) on the same configs as the timed trials."""
    from prunetune.search.objective import prepare_search, screen_trial
    from prunetune.paths import weights_dir

    setup = prepare_search(cfg, weights_dir=weights_dir(cfg.study_name))
    out = []
    for r in recs:
        s = screen_trial(setup, r.params, r.number)
        out.append(
            {
                "number": r.number,
                "screen_s": s.timings["total_s"],
                "trial_s": r.timings.get("total_s"),
                "screen_accuracy": s.metrics.get("accuracy"),
                "accuracy": r.metrics.get("accuracy"),
            }
        )
    return out


def screen_lines(screen: list[dict] | None) -> list[str]:
    if not screen:
        return []
    s = statistics.fmean(x["screen_s"] for x in screen)
    t = statistics.fmean(x["trial_s"] for x in screen)
    return [
        "",
        "## Part 3: the cheap fidelity (screening)",
        "",
        f"The same {len(screen)} configs scored as a screened config (prune, batch-norm statistics "
        "on 300 training images, accuracy on up to 500 validation images; no fine-tune, no FPS): "
        f"**{s:.2f} s per screened config vs {t:.1f} s per full trial** ({t / s:.0f}x).",
        "",
    ]


def render(data: dict, out=None, regenerated: bool = False) -> None:
    facts, per, mean, noise = data["machine"], data["trials"], data["mean"], data["fps_noise"]
    rows = []
    for p in per:
        ratios = " ".join(f"{v:.2f}" for v in (p["ratios"] or {}).values())
        rows.append(
            [
                p["number"],
                f"[{ratios}] bits {'/'.join(map(str, p['bits']))}",
                *(f"{p.get(k, 0.0):.2f}" for k in KEYS),
            ]
        )
    rows.append(["**mean**", "", *(f"{mean[k]:.2f}" for k in KEYS)])
    save_s = statistics.fmean(
        [
            p.get("total_s", 0.0)
            - p.get("compress_s", 0)
            - p.get("finetune_s", 0)
            - p.get("measure_s", 0)
            for p in per
        ]
    )
    warm, later = per[:3], [p["iteration_s"] for p in per[3:]]
    lines = [
        "# Cost anatomy of a search trial, and FPS measurement noise",
        "",
        f"Command: `{data['command']}`"
        + (
            " (report text re-rendered from the recorded results with "
            "`--report-only`; nothing recomputed)"
            if regenerated
            else ""
        ),
        "",
        _common.machine_line(
            facts,
            f"training on torch's default {facts['torch_threads_training']} "
            "threads, FPS on 1 thread",
        ),
        "",
        "Protocol: " + " ".join(__doc__.split("\n\n")[2].split()),
        "",
        " ".join(__doc__.split("\n\n")[3].split()),
        "",
        f"## Part 1: time per trial ({len(per)} trials, default settings"
        + (", quick" if data.get("quick") else "")
        + ")",
        "",
        "Seconds. compress = prune + fake-quant + MACs; measure = validation accuracy + runner + "
        "FPS (2 models x 11 samples x 50 ms = 1.1 s of pure timing); tracking = MLflow child run; "
        "other = iteration wall - trial total - tracking (Optuna ask/tell on SQLite, locks).",
        "",
    ]
    lines += _common.table(
        [
            "trial",
            "config (ratios conv1 conv2 fc1)",
            "compress",
            "fine-tune",
            "measure",
            "tracking",
            "other",
            "iteration",
        ],
        rows,
    )
    shares = {k: mean[k] / mean["iteration_s"] for k in KEYS[:-1]}
    lines += [
        "",
        "Start-up before the first trial (data, base model from the cache, inventory, base FPS, "
        f"study creation, MLflow parent run): {data['startup_s']:.1f} s, of which tracking "
        f"{data['tracking_start_s']:.2f} s. End of search (test accuracy of the front, MLflow "
        f"front artifacts, model registry): {data['end_s']:.1f} s, of which tracking "
        f"{data['tracking_end_s']:.2f} s. Saving trial weights (in total_s, outside the three "
        f"phases): {save_s:.2f} s per trial.",
        "",
        "Shares of a mean iteration: "
        + ", ".join(f"{k.removesuffix('_s')} {v:.0%}" for k, v in shares.items())
        + f". **Trials per hour on this machine: {data['trials_per_hour']:.0f}** (mean iteration "
        f"{mean['iteration_s']:.1f} s"
        + (
            f"; {3600 / statistics.fmean(later):.0f}/h counting only the trials after the 3 "
            "warm-start trials, of which the unpruned 8-bit one alone took "
            f"{warm[0]['iteration_s']:.0f} s: fine-tuning cost follows the size of fc1, so a "
            "study's early, lightly pruned trials are its dearest"
            if later
            else ""
        )
        + "). Fine-tuning is where the time goes; tracking and Optuna are noise. "
        "The load average above says how busy the shared cores were: on a quiet machine expect "
        "roughly 2-3x more trials per hour.",
        "",
        "## Part 2: FPS measurement noise",
        "",
        f"{data.get('fps_reps', len(noise['11']['raw']))} back-to-back measurements of the same "
        "two models, as a trial measures (interleaved pair, 50 ms samples, batch 1, torch, 1 "
        "thread); the 11-sample block ran first, then the 3-sample block. CV = sd / mean over the "
        "measurements; IQR spread = within one measurement (median over measurements).",
        "",
    ]
    lines += _common.table(
        [
            "samples per measurement",
            "base FPS (median)",
            "CV base",
            "(4,2) FPS (median)",
            "CV (4,2)",
            "speedup (median, min..max)",
            "CV speedup",
            "IQR spread base / (4,2)",
        ],
        [
            [
                k,
                f"{v['base_fps']:,.0f}",
                f"{v['cv_base']:.1%}",
                f"{v['small_fps']:,.0f}",
                f"{v['cv_small']:.1%}",
                f"{v['speedup']:.1f} ({v['speedup_range'][0]:.1f}..{v['speedup_range'][1]:.1f})",
                f"{v['cv_speedup']:.1%}",
                f"{v['iqr_base']:.0%} / {v['iqr_small']:.0%}",
            ]
            for k, v in noise.items()
        ],
    )
    n11, n3 = noise["11"], noise.get("3")
    lo, hi = sorted((n11["cv_base"], n11["cv_small"]))
    where = (
        "below both"
        if n11["cv_speedup"] < lo
        else "between"
        if n11["cv_speedup"] < hi
        else "above both"
    )
    reading = (
        f"with 11 samples the speedup ratio's CV ({n11['cv_speedup']:.1%}) is {where} the absolute "
        f"FPS CVs ({n11['cv_base']:.1%} base, {n11['cv_small']:.1%} (4,2))"
        + (
            ": interleaving makes the ratio the steadier number."
            if where == "below both"
            else ": on this run the ratio was not clearly steadier than absolute FPS (the load "
            "from other jobs changed within measurements, not only between them)."
        )
    )
    if n3:
        reading += (
            f" With 3 samples the speedup's CV is {n3['cv_speedup']:.1%} and its median "
            f"{n3['speedup']:.1f} against {n11['speedup']:.1f} with 11: too few samples are "
            "noisier and, here, also read lower (the blocks ran at different moments of a "
            "changing load, so part of the gap may be the load). Use 3 only when FPS is not an "
            "objective."
        )
    reading += (
        " Two FPS values (or speedups) of different trials closer than about 2 x CV are not "
        "distinguishable; FPS as an objective carries that noise into the front, accuracy and "
        "FLOPs do not."
    )
    lines += ["", "Reading: " + reading]
    lines += screen_lines(data.get("screen"))
    _common.write("cost_anatomy", "\n".join(lines) + "\n", data, out)


if __name__ == "__main__":
    raise SystemExit(main())
