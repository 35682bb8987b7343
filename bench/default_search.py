"""The default search as a user runs it: wall time and whether its front meets the product's bar.

    python bench/default_search.py [--warm 2] [--cold 1] [-- EXTRA SEARCH ARGS]

Runs `prunetune search --export out` (all defaults: mnist_net on mnist5k, 30 trials) in a fresh
folder, each run in its own process, and reads the result back from the run's Optuna study:

- **cold** runs use an empty model cache (PRUNETUNE_HOME): the base model is trained first, as on a
  newcomer's first run;
- **warm** runs share a model cache holding that base (trained once before, untimed), as every
  later search does.

Wall time is the `prunetune search` process's, export included, from start to exit. Per run: the
front size, and the front member with at least 10x fewer MACs than the base that has the best
test accuracy (the bar: at most 2 points below the base's test accuracy). The load average is
recorded before and after each run. Writes default_search.md and default_search.json.
"""

from __future__ import annotations

import _common

_common.ensure_env()

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

STUDY = "mnist_net-mnist5k"
MACS_FACTOR = 10.0
MAX_DROP_POINTS = 2.0
LIMIT_S = 300.0


def run_once(work: Path, home: Path, extra: list[str]) -> dict:
    """One `prunetune search --export out` in a fresh folder `work`; its wall time and front."""
    import optuna

    from prunetune.search.records import COMPLETE
    from prunetune.search.results import summarize

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "PRUNETUNE_HOME": str(home)}
    load_before, t0 = os.getloadavg()[0], time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "prunetune", "search", "--export", "out", *extra],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    wall, load_after = time.perf_counter() - t0, os.getloadavg()[0]
    if proc.returncode != 0:
        raise SystemExit(f"search failed in {work}: {proc.stderr.strip().splitlines()[-1:]}")
    study = optuna.load_study(
        study_name=STUDY, storage=f"sqlite:///{work / 'mlruns' / 'optuna.db'}"
    )
    base = study.user_attrs["base_metrics"]
    tests = study.user_attrs.get("test_accuracy", {})
    result = summarize(study)
    front = [
        {
            "trial": r.number,
            "accuracy": r.metrics["accuracy"],
            "test_accuracy": tests.get(str(r.number)),
            "macs": r.metrics["macs"],
            "fps": r.metrics["fps"],
            "config": r.config,
        }
        for r in result.front_records()
    ]
    small = [
        p
        for p in front
        if p["macs"] * MACS_FACTOR <= base["macs"] and p["test_accuracy"] is not None
    ]
    best = max(small, key=lambda p: p["test_accuracy"], default=None)
    drop = None if best is None else 100 * (base["test_accuracy"] - best["test_accuracy"])
    return {
        "wall_s": round(wall, 1),
        "load_1min": [round(load_before, 2), round(load_after, 2)],
        "trials": len([r for r in result.records if r.state == COMPLETE]),
        "base": {k: base[k] for k in ("accuracy", "test_accuracy", "macs", "fps")},
        "front": front,
        "best_10x": best,
        "drop_points": drop,
        "meets_bar": len(front) >= 3 and drop is not None and drop <= MAX_DROP_POINTS,
        "exported": (work / "out").is_dir(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warm", type=int, default=2, help="runs with the base model cached")
    ap.add_argument("--cold", type=int, default=1, help="runs that train the base model first")
    ap.add_argument("extra", nargs="*", help="extra `prunetune search` arguments (after --)")
    args = ap.parse_args()
    facts = _common.machine_facts()
    root = _common.scratch("default_search", quick=False)
    warm_home = root / "home-warm"
    runs: list[dict] = []
    for i in range(args.cold):
        home = root / f"home-cold-{i}"
        shutil.rmtree(home, ignore_errors=True)
        runs.append({"kind": "cold", **run_once(root / f"cold-{i}", home, args.extra)})
        print(f"cold {i}: {runs[-1]['wall_s']} s", flush=True)
        if not (warm_home / "checkpoints").is_dir():  # its trained base serves the warm runs
            shutil.copytree(home, warm_home)
    if args.warm and not (warm_home / "checkpoints").is_dir():
        run_once(
            root / "prime", warm_home, ["--trials", "1", *args.extra]
        )  # untimed: trains the base
    for i in range(args.warm):
        runs.append({"kind": "warm", **run_once(root / f"warm-{i}", warm_home, args.extra)})
        print(f"warm {i}: {runs[-1]['wall_s']} s", flush=True)
    rep = {
        "command": _common.command("default_search.py", sys.argv[1:]),
        "facts": _common.finish_facts(facts),
        "limit_s": LIMIT_S,
        "runs": runs,
    }
    _common.write("default_search", markdown(rep), rep)


def markdown(rep: dict) -> str:
    runs = rep["runs"]
    rows = []
    for r in runs:
        b, base = r["best_10x"], r["base"]
        best = (
            (
                f"trial {b['trial']}: {base['macs'] / b['macs']:.1f}x fewer MACs, "
                f"{100 * b['test_accuracy']:.1f} % (-{r['drop_points']:.1f} points)"
            )
            if b
            else "none"
        )
        rows.append(
            [
                r["kind"],
                f"{r['wall_s']:.0f} s ({r['wall_s'] / 60:.1f} min)",
                f"{r['load_1min'][0]:.1f} / {r['load_1min'][1]:.1f}",
                len(r["front"]),
                f"{100 * base['test_accuracy']:.1f} %",
                best,
                "yes" if r["meets_bar"] else "NO",
            ]
        )
    walls = {k: [r["wall_s"] for r in runs if r["kind"] == k] for k in ("cold", "warm")}
    summary = "; ".join(
        f"{k}: median {statistics.median(v):.0f} s over {len(v)} run(s) "
        f"(range {min(v):.0f}..{max(v):.0f})"
        for k, v in walls.items()
        if v
    )
    under = all(r["wall_s"] < rep["limit_s"] for r in runs)
    lines = [
        "# The default search: wall time and front",
        "",
        f"Command: `{rep['command']}`",
        "",
        _common.machine_line(rep["facts"], "torch default threads"),
        "",
        "Each run: `prunetune search --export out` with all defaults (mnist_net on mnist5k, 30 "
        "trials, 3 fine-tune epochs on 2,500 class-balanced images, objectives accuracy, FLOPs, "
        "FPS) in a fresh folder; **cold** = empty model cache (the base is trained first), "
        "**warm** = base cached. The bar: front of at least 3 points with a member of >= "
        f"{MACS_FACTOR:.0f}x fewer MACs at <= {MAX_DROP_POINTS:.0f} points of test-accuracy drop.",
        "",
        *_common.table(
            [
                "run",
                "wall (search + export)",
                "load 1 min before / after",
                "front",
                "base test acc",
                f"best >= {MACS_FACTOR:.0f}x-fewer-MACs member",
                "bar met",
            ],
            rows,
        ),
        "",
        f"Wall time {summary}. Under {rep['limit_s'] / 60:.0f} minutes in every run: "
        f"**{'yes' if under else 'NO'}**.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
