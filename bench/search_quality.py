"""Search quality: hypervolume against trials for TPE, NSGA-II, random and a uniform-ratio sweep,
on mnist_net, a residual net (resnet18) and a depthwise net (mobilenet_v2), all on mnist5k.

    python bench/search_quality.py [--quick] [--workers 2]

Objectives are validation accuracy and FLOPs: both are deterministic given the seed (same seed,
same trial number, same params -> same accuracy on CPU), so hypervolume differences are not FPS
timing noise. Hypervolume is `prunetune.search.pareto.hypervolume` with the base model's metrics as
`normalise_by` (reference point: accuracy 0, FLOPs of the base), i.e. the area under
(accuracy / base accuracy) against (1 - FLOPs / base FLOPs); 1.0 would be the base accuracy at zero
cost. The space is pruning ratios only (`bits=[32]`): with these objectives bit-widths change
nothing but accuracy noise, so they are left out. Every sampler of a model uses the same base
checkpoint (seed 0), the same fine-tuning and the same warm start (the 3 trials prunetune enqueues
into every study: ratios 0, 0.5 and 0.75 everywhere), and a seed means the sampler's seed *and* the
per-trial fine-tuning seeds. The uniform sweep runs `run_trial` with every group at one ratio
(granularity "global"), on an evenly spaced ratio grid visited coarse to fine.

Studies are stored under the scratch directory (default /tmp/bench-work/search, override with
$PRUNETUNE_BENCH_WORK); run again to resume; `bench/search_vs_random.py` reuses the TPE and random
studies of mnist_net. Writes bench/results/search_quality.md and .json.
"""

from __future__ import annotations

import _common

_common.ensure_env()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

from _search import Grouped, Settings, Task, best_accuracy_under, hv_curve, run_tasks, trial_seconds  # noqa: E402

SAMPLERS = ("tpe", "nsga2", "random", "uniform")
MNIST = Settings(
    trials=24, epochs=2, subset=500, granularity="layer", base_epochs=5, uniform_trials=12
)
BIG = Settings(
    trials=12, epochs=1, subset=500, granularity="block", base_epochs=2, uniform_trials=6
)
MNIST_QUICK = Settings(
    trials=5, epochs=1, subset=200, granularity="layer", base_epochs=5, uniform_trials=3
)
BIG_QUICK = Settings(
    trials=2, epochs=1, subset=100, granularity="block", base_epochs=2, uniform_trials=2
)
BIG_MODELS = ("resnet18", "mobilenet_v2")


def plan(
    quick: bool, seeds: dict[str, list[int]], big_samplers: list[str]
) -> tuple[list[Task], dict]:
    """Tasks in run order: bases, then mnist_net TPE/random, the big models, the rest of mnist_net
    (so short mnist_net studies fill the tail of the two workers)."""
    m, b = (MNIST_QUICK, BIG_QUICK) if quick else (MNIST, BIG)
    settings = {"mnist_net": m, **{x: b for x in BIG_MODELS}}
    tasks = [Task("base", x, settings=b) for x in BIG_MODELS] + [
        Task("base", "mnist_net", settings=m)
    ]
    first = [
        Task("study", "mnist_net", smp, seed, m)
        for seed in seeds["main"]
        for smp in ("tpe", "random")
    ]
    big = [
        Task("study", x, smp, seed, b)
        for x in BIG_MODELS
        for seed in seeds["big"]
        for smp in big_samplers
    ]
    big += [Task("uniform", x, "uniform", seed, b) for x in BIG_MODELS for seed in seeds["big"]]
    last = [Task("study", "mnist_net", "nsga2", seed, m) for seed in seeds["nsga2"]]
    last += [Task("uniform", "mnist_net", "uniform", seed, m) for seed in seeds["uniform"]]
    return tasks + first + big + last, settings


def checkpoints(n: int) -> list[int]:
    ks = list(range(4, n + 1, 4))
    if n < 4 or ks[-1] != n:
        ks.append(n)
    return ks


def model_section(model: str, groups: Grouped, s: Settings) -> tuple[list[str], dict]:
    runs = {smp: groups.by.get((model, smp), []) for smp in SAMPLERS}
    runs = {k: v for k, v in runs.items() if v}
    if not runs:
        return [], {}
    n = s.trials
    curves = {smp: [hv_curve(r) for r in rs] for smp, rs in runs.items()}
    base = next(iter(runs.values()))[0]["base_metrics"]
    lines = [
        f"## {model}",
        "",
        f"Base (seed-0 checkpoint, {s.base_epochs} epochs on 4,000 images): validation accuracy "
        f"{base['accuracy']:.3f}, test {base.get('test_accuracy') or float('nan'):.3f}, "
        f"{base['macs']:,} MACs. Search: {s.granularity} granularity, {n} trials per study, "
        f"fine-tuning {s.epochs} epoch(s) on {s.subset} class-balanced images; uniform sweep: "
        f"{s.uniform_trials} ratios. Seeds per sampler: "
        + ", ".join(f"{k} {len(v)}" for k, v in runs.items())
        + ".",
        "",
        "Hypervolume against trials (mean ± sd over seeds, min..max):",
        "",
    ]
    ks = checkpoints(n)
    rows = []
    for k in ks:
        row = [str(k)]
        for smp in runs:
            vals = [c[k - 1] for c in curves[smp] if len(c) >= k]
            row.append(_common.ms(vals) if vals else "-")
        rows.append(row)
    lines += _common.table(["trials", *runs], rows)
    summary = {}
    rows = []
    for smp, rs in runs.items():
        finals = [c[-1] for c in curves[smp]]
        b5 = [best_accuracy_under(r, 0.05) for r in rs]
        b25 = [best_accuracy_under(r, 0.25) for r in rs]
        secs = [t for r in rs for t in trial_seconds(r)]
        nt = len(rs[0]["records"])
        summary[smp] = {
            "final_hv": finals,
            "trials": nt,
            "curves": curves[smp],
            "best_acc_5pct_macs": b5,
            "best_acc_25pct_macs": b25,
            "trial_s_mean": sum(secs) / max(len(secs), 1),
            "study_wall_s": [r["wall_s"] for r in rs],
            "failed": sum(r2["state"] != "complete" for r in rs for r2 in r["records"]),
            "seeds": [r["seed"] for r in rs],
        }

        def fmt(xs):
            if any(x is not None for x in xs):
                return _common.ms([x for x in xs if x is not None])
            return "none"

        rows.append(
            [
                smp,
                len(rs),
                nt,
                _common.ms(finals),
                fmt(b5),
                fmt(b25),
                f"{summary[smp]['trial_s_mean']:.1f}",
                summary[smp]["failed"],
            ]
        )
    lines += ["", "Final front (all trials of a study):", ""]
    lines += _common.table(
        [
            "sampler",
            "seeds",
            "trials",
            "hypervolume",
            "best val acc at <= 5 % of base MACs",
            "best val acc at <= 25 % of base MACs",
            "s / trial",
            "failed trials",
        ],
        rows,
    )
    return lines, summary


def verdicts(model: str, summary: dict) -> list[str]:
    """Plain sentences: what beats what, by how much, and whether it exceeds the seed spread."""
    if not summary:
        return []
    out = []
    st = {k: _common.stats(v["final_hv"]) for k, v in summary.items()}
    order = sorted(st, key=lambda k: -st[k]["mean"])
    parts = ", ".join(
        f"{k} {st[k]['mean']:.3f} (n={st[k]['n']}, {summary[k]['trials']} trials)" for k in order
    )
    out.append(f"- **{model}**: final hypervolume, best first: {parts}.")
    for a, b in (("tpe", "random"), ("nsga2", "random"), ("tpe", "nsga2"), ("tpe", "uniform")):
        if a in st and b in st:
            d = st[a]["mean"] - st[b]["mean"]
            spread = max(st[a]["sd"], st[b]["sd"])
            wins = ""
            pa, pb = summary[a]["final_hv"], summary[b]["final_hv"]
            if a != "uniform" and b != "uniform" and len(pa) == len(pb) and len(pa) > 1:
                wins = f"; per seed {a} - {b}: " + ", ".join(
                    f"{x - y:+.3f}" for x, y in zip(pa, pb)
                )
            if st[a]["n"] < 2 or st[b]["n"] < 2:
                verdict = "one seed only: no spread to compare against"
            elif abs(d) > 2 * spread:
                verdict = "larger than twice the seed spread"
            elif abs(d) > spread:
                verdict = "larger than the seed spread but not twice it"
            else:
                verdict = "within the seed spread: not a real difference at this sample size"
            out.append(f"  - {a} - {b}: {d:+.3f} ({d / st[b]['mean']:+.1%}){wins}; {verdict}.")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke test")
    parser.add_argument("--workers", type=int, default=2, help="one-thread worker processes")
    parser.add_argument(
        "--mnist-seeds", type=int, default=3, help="seeds of TPE and random on mnist_net"
    )
    parser.add_argument("--nsga2-seeds", type=int, default=2, help="seeds of NSGA-II on mnist_net")
    parser.add_argument(
        "--uniform-seeds", type=int, default=2, help="seeds of the uniform sweep on mnist_net"
    )
    parser.add_argument(
        "--big-seeds", type=int, default=1, help="seeds per sampler on resnet18, mobilenet_v2"
    )
    parser.add_argument(
        "--big-samplers", default="tpe,random", help="samplers on resnet18, mobilenet_v2"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="re-render the .md from the recorded .json (no compute)",
    )
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    workdir = _common.scratch("search", args.quick)
    name = "search_quality" + ("-quick" if args.quick else "")
    out = workdir if args.quick else _common.RESULTS
    if args.report_only:  # re-render the report from the recorded run (no compute)
        data = json.loads((out / f"{name}.json").read_text())
        render(data, name, out, regenerated=True)
        return 0
    facts = _common.machine_facts()
    one = [0]
    seeds = {
        "main": one if args.quick else list(range(args.mnist_seeds)),
        "nsga2": one if args.quick else list(range(args.nsga2_seeds)),
        "uniform": one if args.quick else list(range(args.uniform_seeds)),
        "big": list(range(args.big_seeds)),
    }
    tasks, settings = plan(args.quick, seeds, args.big_samplers.split(","))
    results = run_tasks(tasks, workdir, args.workers)
    _common.finish_facts(facts)
    data = {
        "command": _common.command("search_quality.py", argv),
        "machine": facts,
        "workers": args.workers,
        "seeds": seeds,
        "big_samplers": args.big_samplers.split(","),
        "settings": {k: v.as_dict() for k, v in settings.items()},
        "results": results,
    }
    render(data, name, out)
    return 0


def collapse_line(model: str, groups: Grouped, base_acc: float) -> str:
    """How many fine-tuned trials ended at chance accuracy, and what fine-tuning did to the
    unpruned warm-start trial (all ratios 0)."""
    recs = [
        (res["seed"], r)
        for (m, _), rs in groups.by.items()
        if m == model
        for res in rs
        for r in res["records"]
        if r["state"] == "complete"
    ]
    if not recs:
        return ""
    chance = [r for _, r in recs if r["metrics"]["accuracy"] < 0.2]
    # the same trial (same seed and number) in every sampler's study: once per seed
    unpruned = list(
        {
            seed: r["metrics"]["accuracy"]
            for seed, r in recs
            if r["ratios"] and not any(r["ratios"].values())
        }.values()
    )
    line = (
        f"Of the {len(recs)} trials run on {model} (all samplers and seeds; the warm-start and "
        f"start-up trials repeat across samplers), {len(chance)} ended at "
        f"chance-level validation accuracy (< 20 %) after fine-tuning"
    )
    if unpruned:
        line += (
            f"; the unpruned warm-start trial (ratio 0 everywhere, only fine-tuned) scored "
            f"{_common.ms(unpruned)} against the base's {base_acc:.3f}"
        )
    return line + "."


def render(data: dict, name: str, out, regenerated: bool = False) -> None:
    facts, results = data["machine"], data["results"]
    settings = {k: Settings(**v) for k, v in data["settings"].items()}
    groups = Grouped.of(results)
    if "seeds" not in data:  # recorded before these keys existed: read them off the results

        def seeds_of(m, smp):
            return [r["seed"] for r in groups.by.get((m, smp), [])]

        data["seeds"] = {
            "main": seeds_of("mnist_net", "tpe"),
            "nsga2": seeds_of("mnist_net", "nsga2"),
            "uniform": seeds_of("mnist_net", "uniform"),
            "big": seeds_of(BIG_MODELS[0], "tpe"),
        }
        data["big_samplers"] = [
            smp for smp in ("tpe", "nsga2", "random") if (BIG_MODELS[0], smp) in groups.by
        ]
        data["workers"] = 2
    seeds = data["seeds"]
    lines = [
        "# Search quality: hypervolume against trials (TPE, NSGA-II, random, uniform sweep)",
        "",
        f"Command: `{data['command']}`"
        + (
            " (report text re-rendered from the recorded results with "
            "`--report-only`; nothing recomputed)"
            if regenerated
            else ""
        ),
        "",
        _common.machine_line(facts, f"{data['workers']} worker processes x 1 torch thread"),
        "",
        "Protocol: " + " ".join(__doc__.split("\n\n")[2].split()),
        "",
        "Samplers as prunetune builds them (`study.make_sampler`): TPE multivariate with 10 "
        "random start-up trials, NSGA-II with a population of max(8, trials // 4) = 8, random. "
        "Optuna's TPE and NSGA-II draw their start-up trials from a RandomSampler with the same "
        "seed, so for one seed TPE, NSGA-II and random propose *the same* first trials (the 3 "
        "warm-start trials, then identical random ones): TPE departs from random at trial 11, "
        "NSGA-II at its second generation. The comparison is paired (common random numbers): "
        "differences come only from the later, model-based trials. With 12 trials "
        "(resnet18, mobilenet_v2) TPE has made only 2 model-based proposals. "
        "Hypervolume uses validation accuracy (500 images: about ±1.3 points from chance "
        "alone), the split the search selects on.",
        "",
        "Scaled down to fit ~40 min of compute on 2 shared cores (for all benches together): "
        "mnist_net fine-tunes 2 epochs on 500 images per trial (defaults: 3 on 2,000 at the time; "
        f"now 3 on 2,500), 24 trials; seeds: TPE and random {len(seeds['main'])}, NSGA-II "
        f"{len(seeds['nsga2'])}, uniform sweep {len(seeds['uniform'])} (its seed only changes the "
        "fine-tuning draws). resnet18 and mobilenet_v2: a 2-epoch base (default 5), block "
        "granularity (5 and 19 ratio dimensions), 1 fine-tune epoch on 500 images, 12 trials, "
        f"samplers {', '.join(data['big_samplers'])} and a 6-ratio uniform sweep, "
        f"{len(seeds['big'])} seed(s): single runs, not distributions (NSGA-II left out there: at "
        "12 trials it is 8 random trials and 4 offspring).",
        "",
    ]
    reused = [r["task"] for r in results if r["kind"] in ("study", "uniform") and r["wall_s"] < 30]
    if reused:
        lines += [
            f"{len(reused)} of the studies were finished by an earlier invocation of this bench "
            "with the same settings (stopped to cut NSGA-II and uniform-sweep seeds, then "
            "restarted; finished studies are read back from their storage, interrupted trials "
            "re-run with their own seeds) and only read here: "
            + ", ".join(f"`{t}`" for t in sorted(reused))
            + ". The wall time above covers this invocation only; per-study times of the earlier "
            "one are not in the JSON.",
            "",
        ]
    models, verdict_lines = {}, []
    for model in ("mnist_net", *BIG_MODELS):
        sec, summary = model_section(model, groups, settings[model])
        if not sec:
            continue
        base_acc = next(iter(next(iter(r for (m, _), r in groups.by.items() if m == model))))[
            "base_metrics"
        ]["accuracy"]
        lines += sec + ["", collapse_line(model, groups, base_acc), ""]
        models[model] = summary
        verdict_lines += verdicts(model, summary)
    lines += ["## Conclusions", "", *verdict_lines, ""]
    if "mnist_net" in models and {"tpe", "random"} <= set(models["mnist_net"]):
        t = _common.stats(models["mnist_net"]["tpe"]["final_hv"])
        r = _common.stats(models["mnist_net"]["random"]["final_hv"])
        ok = t["mean"] > r["mean"]
        lines += [
            f"Issue #4 acceptance (mnist_net, equal budget of {settings['mnist_net'].trials} "
            f"trials, {t['n']} seeds): TPE {t['mean']:.3f} ± {t['sd']:.3f} vs random "
            f"{r['mean']:.3f} ± {r['sd']:.3f} -> "
            + ("**TPE ahead**" if ok else "**TPE NOT ahead**")
            + (
                " (but within the seed spread)"
                if t["n"] > 1 and abs(t["mean"] - r["mean"]) <= max(t["sd"], r["sd"])
                else ""
            )
            + ". See search_vs_random.md.",
            "",
        ]
    big = [m for m in BIG_MODELS if m in models]
    if big:
        lines += [
            "Reading the residual and depthwise results: at this fine-tuning budget (one epoch on "
            "500 images: 8 Adam steps at the default lr 1e-3) almost every pruned ResNet-18 / "
            "MobileNetV2 collapses to chance accuracy, and even the unpruned network loses "
            "accuracy from fine-tuning alone (lines above). Their fronts therefore hold only the "
            "lightly pruned trials, and the hypervolume ranks whoever happened to propose light "
            "pruning: the uniform sweep's grid starts at ratio 0.05; on resnet18 one of TPE's two "
            "model-based trials (the last) went to low ratios and survived, on mobilenet_v2 "
            "neither did, so TPE and random are equal there. That is a statement about the "
            "fine-tuning budget, not about the samplers; the sampler comparison on these models "
            "needs far more fine-tuning per trial (and more than 12 trials) than fitted here.",
            "",
        ]
    lines += ["Per-study wall time and every trial's record are in the JSON."]
    data = {**data, "models": models}
    _common.write(name, "\n".join(lines) + "\n", data, out)


if __name__ == "__main__":
    raise SystemExit(main())
