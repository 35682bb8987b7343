"""Keep the search fast on a busy machine (issue 23): the main job alone, beside a busy process,
and as two searches sharing one study, old behaviour against new, plus training step times.

    flock /work/BENCH_LOCK nice -n 0 python bench/busy_machine.py [--trials 10] [--repeats 2]
        [--steps 12] [--quick]

Part 1, the main job: `prunetune search --trials N` (mnist_net on mnist5k, every other setting
the default; base model cached, trained once before, untimed), each run in a fresh folder and
its own process(es), in three situations:
- **alone**;
- **busy**: beside one CPU-bound busy loop (`python -c "while True: pass"`, nice 0, started just
  before the search and stopped after it);
- **shared**: two `prunetune search` processes on the same study and storage (same folder, same
  --study, each --trials N), started together; wall time until both exit (N trials in all).
Each with three behaviours: **old**, prunetune as it was before issue 23 (git fae87f6, exported to
the scratch folder: training on torch's default threads, one per core, and OMP_WAIT_POLICY unset,
so GNU OpenMP threads spin 300,000 times before they sleep; its default strategy was the per-group
search); **new**, this checkout with the same work (`--strategy search`) and its thread defaults
(`--train-threads auto`, OMP_WAIT_POLICY=PASSIVE set at start-up); and **default**, this checkout
exactly as a user runs it (the default `targets` strategy, issue 22: other work per trial, so its
times compare with its own alone run only). Interleaved: every repeat runs alone, busy and shared,
each behaviour back to back (the order alternates).
Per run: wall time from launch to exit, time from launch to the first trial's start, finished
trials, the trials' median fine-tune and measure seconds (measure_s: validation accuracy, runner
build and FPS timing, including the wait for the machine-wide quiet lock, which holds a trial's
FPS timing until the other search's training steps out), the training thread counts chosen (new),
and how
many trials' FPS was measured under load (new). Ratios: busy / alone and shared / alone of the
same behaviour, from the medians over repeats.

Part 2, one training step (forward, backward, fused Adam; batch 64, mnist5k-shaped input) of
mnist_net and resnet18 (the zoo's, as searched) and a pruned config of each (uniform L2 pruning
at 0.75 and 0.5 of every group), at 1 and 2 threads, with OMP_WAIT_POLICY unset (torch's
default: spin) and PASSIVE, quiet and beside one busy loop at nice 0. One fresh process per wait
policy (OpenMP reads it when torch loads); per cell, 2 warm-up steps, then `--steps` timed steps
taken in rounds alternating 1 and 2 threads; median and interquartile range.

Writes bench/results/busy_machine.md and .json (with the command, git revision, load average).
`--quick`: 3 trials, 1 repeat, 4 steps, report in the scratch folder.
"""

from __future__ import annotations

import _common

_common.ensure_env()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(_common.REPO))  # this checkout's prunetune, whatever is installed

OLD_REV = "fae87f6"  # the last commit before issue 23's thread policy
STUDY = "busy"
SITUATIONS = ("alone", "busy", "shared")
BEHAVIOURS = ("old", "new", "default")
# `new` runs the same per-group search as `old` (the default before issue 22); `default` is this
# checkout's default strategy (targets), the main job as a user runs it now
STRATEGY_ARGS = {"old": [], "new": ["--strategy", "search"], "default": []}
BUSY_LOOP = [sys.executable, "-c", "while True: pass"]
STEP_MODELS = (("mnist_net", None), ("mnist_net", 0.75), ("resnet18", None), ("resnet18", 0.5))


# -- part 1: the main job --------------------------------------------------------------------
def old_source(root: Path) -> Path:
    """prunetune at OLD_REV, exported (git archive) under `root`; the folder to put on
    PYTHONPATH."""
    dest = root / f"src-{OLD_REV}"
    if not (dest / "prunetune").is_dir():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        archive = dest / "src.tar"
        subprocess.run(
            ["git", "-C", str(_common.REPO), "archive", "-o", str(archive), OLD_REV, "prunetune"],
            check=True,
        )
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
        archive.unlink()
    return dest


def search_env(home: Path, src: Path) -> dict[str, str]:
    """The environment of a search process: this user's, with the base cache `home`, prunetune
    from `src`, and no OpenMP settings (each behaviour's own defaults apply)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    return env | {"PRUNETUNE_HOME": str(home), "PYTHONPATH": str(src), "RAY_AUTH_MODE": "disabled"}


def launch(work: Path, env: dict, trials: int, log: Path, extra: list[str]) -> subprocess.Popen:
    """`prunetune search --trials N --study STUDY [extra]` in `work`, stderr to `log`."""
    argv = [sys.executable, "-m", "prunetune", "search", "--trials", str(trials), "--study", STUDY]
    argv += extra
    with open(log, "w") as err:
        return subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=err)


def study_facts(work: Path, t0: float) -> dict:
    """From the run's study: finished trials, first trial's start after launch, fine-tune medians,
    thread counts chosen and FPS measured under load (new behaviour's records only)."""
    import optuna

    from prunetune.search.results import measured_under_load, summarize

    study = optuna.load_study(
        study_name=STUDY, storage=f"sqlite:///{work / 'mlruns' / 'optuna.db'}"
    )
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.datetime_start)
    result = summarize(study)
    done = [r for r in result.records if r.state == "complete"]
    chosen = [r.context.get("train_threads") for r in done if r.context.get("train_threads")]
    return {
        "trials": len(done),
        "first_trial_s": round(trials[0].datetime_start.timestamp() - t0, 2),
        "finetune_s_median": round(statistics.median(r.timings["finetune_s"] for r in done), 2),
        "measure_s_median": round(statistics.median(r.timings["measure_s"] for r in done), 2),
        "train_threads": {str(n): chosen.count(n) for n in sorted(set(chosen))},
        "fps_under_load": sum(measured_under_load(result, r.context) for r in done),
        "load_at_fps": [r.context["load_1m"] for r in done if "load_1m" in r.context],
    }


def run_search(situation: str, env: dict, work: Path, trials: int, extra: list[str]) -> dict:
    """One timed run of `situation` (alone, busy, shared) in a fresh folder `work`, each search
    with the arguments `extra`."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    busy = subprocess.Popen(BUSY_LOOP) if situation == "busy" else None
    load = os.getloadavg()[0]
    t0 = time.time()
    procs = [
        launch(work, env, trials, work / f"stderr-{i}.log", extra)
        for i in range(2 if situation == "shared" else 1)
    ]
    codes = [p.wait() for p in procs]
    wall = time.time() - t0
    if busy is not None:
        busy.kill()
        busy.wait()
    if any(codes):
        raise SystemExit(f"search failed in {work} (exit {codes}): see its stderr-*.log")
    return {"wall_s": round(wall, 1), "load_1m_before": round(load, 2), **study_facts(work, t0)}


def part1(root: Path, home: Path, args, partial: dict) -> list[dict]:
    """Every situation x behaviour, `args.repeats` times, interleaved; `partial` (with the runs
    so far) is written to the scratch folder's partial.json after every run."""
    srcs = {"old": old_source(root), "new": _common.REPO, "default": _common.REPO}
    runs = []
    for rep in range(args.repeats):
        order = args.behaviours if rep % 2 == 0 else args.behaviours[::-1]
        for situation in args.situations:
            for behaviour in order:
                env = search_env(home, srcs[behaviour])
                work = root / f"{situation}-{behaviour}-{rep}"
                run = run_search(situation, env, work, args.trials, STRATEGY_ARGS[behaviour])
                runs.append({"situation": situation, "behaviour": behaviour, "repeat": rep, **run})
                facts = _common.finish_facts(dict(partial["facts"]))  # load and wall time so far
                (root / "partial.json").write_text(
                    json.dumps({**partial, "facts": facts, "runs": runs}, indent=1)
                )
                print(
                    f"{situation:6s} {behaviour}: {run['wall_s']:6.1f} s, first trial "
                    f"{run['first_trial_s']:.1f} s, threads {run['train_threads']}",
                    flush=True,
                )
    return runs


def prime(root: Path, home: Path) -> None:
    """Train and cache the base model (untimed) unless `home` has it."""
    if (home / "checkpoints").is_dir() and any((home / "checkpoints").iterdir()):
        return
    work = root / "prime"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "prunetune", "search", "--trials", "1", "--study", "prime"],
        cwd=work,
        env=search_env(home, _common.REPO),
        check=True,
        capture_output=True,
    )


# -- part 2: training step times -------------------------------------------------------------
def step_worker(steps: int) -> None:
    """In a fresh process (OMP_WAIT_POLICY as the parent set it): the step-time cells of every
    model, quiet and beside a busy loop, as one JSON line on stdout."""
    import torch

    from prunetune.compress import prune
    from prunetune.data import create_dataset
    from prunetune.models import build_for

    bundle = create_dataset("mnist5k")
    x = torch.stack([bundle.train[i][0] for i in range(64)])
    y = torch.tensor([int(bundle.train[i][1]) for i in range(64)])
    cells = []
    for name, ratio in STEP_MODELS:
        torch.manual_seed(0)
        model = build_for(name, bundle)
        if ratio:
            model = prune(model, ratio, x[:1])
        for beside in ("quiet", "busy loop"):
            busy = subprocess.Popen(BUSY_LOOP) if beside == "busy loop" else None
            try:
                times = _step_times(model, x, y, steps)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
            cells += [
                {"model": name, "pruned": ratio, "beside": beside, "threads": n, "ms": ms}
                for n, ms in times.items()
            ]
    print(json.dumps(cells))


def _step_times(model, x, y, steps: int) -> dict[int, list[float]]:
    """Training step times (ms) at 1 and 2 threads: 2 warm-up steps each, then `steps` timed
    steps each, in rounds alternating the counts."""
    import torch
    import torch.nn.functional as F

    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    out: dict[int, list[float]] = {1: [], 2: []}
    for i in range(2 + steps):
        for n in (1, 2):
            torch.set_num_threads(n)
            t = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
            if i >= 2:
                out[n].append(1000 * (time.perf_counter() - t))
    return out


def part2(steps: int) -> list[dict]:
    """The step-time cells under each wait policy, each policy in its own fresh process."""
    cells = []
    for policy in ("unset", "PASSIVE"):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
        env["PYTHONPATH"] = str(_common.REPO)
        if policy != "unset":
            env["OMP_WAIT_POLICY"] = policy
        proc = subprocess.run(
            [sys.executable, __file__, "--step-worker", "--steps", str(steps)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        cells += [{**c, "policy": policy} for c in json.loads(proc.stdout.strip().splitlines()[-1])]
        print(f"steps with OMP_WAIT_POLICY {policy}: done", flush=True)
    return cells


# -- report ------------------------------------------------------------------------------------
def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def summary(runs: list[dict]) -> dict:
    """Per situation and behaviour: median wall and first-trial time over repeats, with range;
    ratios of medians (busy / alone, shared / alone) and per-repeat ratios. A situation without
    runs (a stopped bench) is left out (None)."""
    out: dict = {}
    for b in BEHAVIOURS:
        of = {
            s: [r for r in runs if r["situation"] == s and r["behaviour"] == b] for s in SITUATIONS
        }
        out[b] = {
            s: {
                "wall_s": _median(rs, "wall_s"),
                "range": [min(r["wall_s"] for r in rs), max(r["wall_s"] for r in rs)],
                "first_trial_s": _median(rs, "first_trial_s"),
                "n": len(rs),
            }
            if rs
            else None
            for s, rs in of.items()
        }
        for s in ("busy", "shared"):
            ok = out[b][s] and out[b]["alone"]
            out[b][f"{s}/alone"] = (
                round(out[b][s]["wall_s"] / out[b]["alone"]["wall_s"], 2) if ok else None
            )
            out[b][f"{s}/alone per repeat"] = [
                round(x["wall_s"] / a["wall_s"], 2) for x, a in zip(of[s], of["alone"])
            ]
    both = out["new"]["alone"] and out["old"]["alone"]
    out["new/old alone"] = (
        round(out["new"]["alone"]["wall_s"] / out["old"]["alone"]["wall_s"], 2) if both else None
    )
    return out


def _iqr(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"{q[1]:.1f} ({q[0]:.1f}-{q[2]:.1f})"


def step_rows(cells: list[dict]) -> list[list]:
    rows = []
    for name, ratio in STEP_MODELS:
        for beside in ("quiet", "busy loop"):
            row = [f"{name}{f' pruned {ratio}' if ratio else ''}", beside]
            for policy in ("unset", "PASSIVE"):
                for n in (1, 2):
                    c = next(
                        c
                        for c in cells
                        if (c["model"], c["pruned"], c["beside"], c["policy"], c["threads"])
                        == (name, ratio, beside, policy, n)
                    )
                    row.append(_iqr(c["ms"]))
            rows.append(row)
    return rows


def run_rows(runs: list[dict]) -> list[list]:
    return [
        [
            r["repeat"],
            r["situation"],
            r["behaviour"],
            f"{r['wall_s']:.1f}",
            f"{r['first_trial_s']:.1f}",
            r["trials"],
            f"{r['finetune_s_median']:.2f}",
            f"{r.get('measure_s_median', float('nan')):.2f}",
            json.dumps(r["train_threads"]) if r["train_threads"] else "-",
            r["fps_under_load"] if r["behaviour"] != "old" else "-",
            f"{r['load_1m_before']:.2f}",
        ]
        for r in runs
    ]


def _span(pair: list[float]) -> str:
    return f"{pair[0]:.1f}-{pair[1]:.1f}"


def verdicts(s: dict) -> list[str]:
    """One line per Done-when item of issue 23 that the runs can answer."""
    try:
        return _verdicts(s)
    except (TypeError, KeyError):  # a stopped bench or a subset: what its runs answer
        lines = []
        for b in BEHAVIOURS:
            for key in ("busy/alone", "shared/alone"):
                if s[b][key] is not None:
                    lines.append(
                        f"- {key}: {b} {s[b][key]:.2f}x (per repeat {s[b][key + ' per repeat']})."
                    )
        if s["new/old alone"] is not None:
            lines.append(f"- Same work, alone: new / old {s['new/old alone']:.2f}x.")
        for b in BEHAVIOURS:
            if s[b]["alone"] is not None:
                lines.append(f"- First trial ({b}, alone): {s[b]['alone']['first_trial_s']:.1f} s.")
        return lines + ["- (not every situation and behaviour ran: see the runs below)"]


def _verdicts(s: dict) -> list[str]:
    new, old, dflt = s["new"], s["old"], s["default"]
    yes = lambda ok: "**met**" if ok else "**NOT met**"  # noqa: E731
    return [
        f"- Beside one busy loop at nice 0: new {new['busy/alone']:.2f}x the run alone (per repeat "
        f"{new['busy/alone per repeat']}), default {dflt['busy/alone']:.2f}x (per repeat "
        f"{dflt['busy/alone per repeat']}), old {old['busy/alone']:.2f}x; target <= 1.6x: "
        f"{yes(max(new['busy/alone'], dflt['busy/alone']) <= 1.6)}.",
        f"- Two searches sharing one study, N trials in all: new {new['shared/alone']:.2f}x one "
        f"search alone (per repeat {new['shared/alone per repeat']}), default "
        f"{dflt['shared/alone']:.2f}x (per repeat {dflt['shared/alone per repeat']}), old "
        f"{old['shared/alone']:.2f}x; target <= 1.1x: "
        f"{yes(max(new['shared/alone'], dflt['shared/alone']) <= 1.1)}.",
        f"- Quiet, same work: new alone {new['alone']['wall_s']:.1f} s vs old "
        f"{old['alone']['wall_s']:.1f} s ({s['new/old alone']:.2f}x); not worse: "
        f"{yes(s['new/old alone'] <= 1.0)} (runs: old {_span(old['alone']['range'])} s, new "
        f"{_span(new['alone']['range'])} s).",
        f"- First trial after {new['alone']['first_trial_s']:.1f} s (new, alone), "
        f"{dflt['alone']['first_trial_s']:.1f} s (default; its first trial waits for the uniform "
        f"baseline's proxy score), old {old['alone']['first_trial_s']:.1f} s; target <= 10 s: "
        f"{yes(new['alone']['first_trial_s'] <= 10)}.",
    ]


def markdown(rep: dict) -> str:
    s = rep["summary"]

    def cell(c: dict | None) -> str:
        return "-" if c is None else f"{c['wall_s']:.1f} ({c['range'][0]:.0f}-{c['range'][1]:.0f})"

    ratio = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
    table = [
        [
            b,
            *(cell(s[b][x]) for x in SITUATIONS),
            ratio(s[b]["busy/alone"]),
            ratio(s[b]["shared/alone"]),
            "-" if s[b]["alone"] is None else f"{s[b]['alone']['first_trial_s']:.1f}",
        ]
        for b in BEHAVIOURS
    ]
    lines = [
        "# Busy machine: the main job and training steps under load (issue 23)",
        "",
        f"Command: `{rep['command']}`",
        "",
        _common.machine_line(rep["facts"], "see the protocol"),
        "",
        __doc__.split("\n\n", 2)[2].split("Writes bench/")[0].strip(),
        "",
        f"## Main job: `prunetune search --trials {rep['trials']}` (mnist_net, base cached)",
        "",
        f"Median wall seconds over {rep['repeats']} repeat(s) (range):",
        "",
        *_common.table(
            [
                "behaviour",
                "alone",
                "beside a busy loop",
                "two sharing a study",
                "busy / alone",
                "shared / alone",
                "first trial (s, alone)",
            ],
            table,
        ),
        "",
        *verdicts(s),
        "",
        "Every run:",
        "",
        *_common.table(
            [
                "repeat",
                "situation",
                "behaviour",
                "wall s",
                "first trial s",
                "trials",
                "fine-tune s (median)",
                "measure s (median; waits for the quiet lock)",
                "train threads chosen (trials)",
                "FPS under load",
                "load 1 min before",
            ],
            run_rows(rep["runs"]),
        ),
        "",
        *step_section(rep["steps"]),
    ]
    return "\n".join(lines)


def step_section(steps: list[dict]) -> list[str]:
    """The step-time table (none when the run measured no steps)."""
    if not steps:
        return []
    return [
        "## Training step times (ms, median and interquartile range)",
        "",
        *_common.table(
            [
                "model",
                "beside",
                "1 thread, spin",
                "2 threads, spin",
                "1 thread, PASSIVE",
                "2 threads, PASSIVE",
            ],
            step_rows(steps),
        ),
        "",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12, help="timed training steps per cell (part 2)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--situations",
        type=lambda v: [x for x in SITUATIONS if x in v.split(",")],
        default=list(SITUATIONS),
        help="comma list of alone,busy,shared (default all); a subset skips the step times",
    )
    ap.add_argument(
        "--behaviours",
        type=lambda v: [x for x in BEHAVIOURS if x in v.split(",")],
        default=list(BEHAVIOURS),
        help="comma list of old,new,default (default all)",
    )
    ap.add_argument(
        "--name",
        default="busy_machine",
        help="results file name (e.g. busy_machine_quiet for a rerun in a quiet window)",
    )
    ap.add_argument("--step-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--report-from",
        metavar="JSON",
        help="render the report from a partial.json "
        "(the runs finished when a bench was stopped); says so next to its command",
    )
    args = ap.parse_args()
    if args.step_worker:
        step_worker(args.steps)
        return 0
    if args.report_from:
        rep = json.loads(Path(args.report_from).read_text())
        rep["command"] += (
            f" (stopped after {len(rep['runs'])} runs; report rendered with --report-from)"
        )
        return report(rep, None)
    if args.quick:
        args.trials, args.repeats, args.steps = 3, 1, 4
    facts = _common.machine_facts()
    root = _common.scratch("busy_machine", args.quick)
    prime(root, root / "home")
    rep = {
        "command": _common.command("busy_machine.py", sys.argv[1:]),
        "trials": args.trials,
        "repeats": args.repeats,
        "steps": part2(args.steps) if args.situations == list(SITUATIONS) else [],
        "name": args.name,
    }
    rep["runs"] = part1(root, root / "home", args, {**rep, "facts": facts})
    rep["facts"] = _common.finish_facts(facts)
    return report(rep, root if args.quick else None)


def report(rep: dict, out: Path | None) -> int:
    """Summarise the runs and write busy_machine.md / .json (to `out`, else bench/results)."""
    rep["summary"] = summary(rep["runs"])
    _common.write(rep.get("name", "busy_machine"), markdown(rep), rep, out=out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
