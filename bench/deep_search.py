"""Issue 13: search quality on deep networks -- does the per-layer search (with and without
screening) beat uniform pruning and global ranking at equal wall time?

Protocol. For each net (zoo adaptations on mnist5k, base trained once per net, seed 0, cached) and
each strategy -- `targets` (the default since issue 22: MACs targets met by construction, uniform
and global first at each, then allocations ranked by a short-fine-tune proxy), `screened`
(`--strategy search --screen K`, multi-fidelity screening on), `unscreened` (`--strategy search`,
no `--screen`), `allocation` (`--strategy search --parametrization allocation`: one MACs-weighted
level + per-group allocations), `uniform`, `global`, `sensitivity` -- and each seed
(study seed = trial fine-tune seeds' root = final fine-tune seed), one `run_search` with the same
`--timeout` (wall clock of the trial loop; the trial in flight finishes) and no trial budget.
Objectives accuracy + MACs, pruning only (bits 32), layer granularity, ratios in
[`--ratio-min`, 0.95] for every strategy, every trial's weights kept.
Then per run and MACs target (<= 5 %, 2 %, 1 % of the base's MACs): the complete trial with the
best validation accuracy within the target is fine-tuned with one final recipe (`--final-epochs`
epochs on the whole training split, Adam lr `--final-lr`, batch norms re-estimated) and scored on
the test split. Table: mean ± sd (min..max) over seeds per strategy and target (a run with no
trial within a target counts as missing and is reported), configs screened, full trials, final
hypervolume (accuracy x MACs, normalised by the base). Proxy check: per net `--spearman-configs`
complete trials spread over MACs (from all that net's runs) get the same final fine-tune; the
Spearman rank correlation of their brief (as searched) vs final test accuracy is reported.

`--nets` takes zoo names and user models (`package.module:function`, as `prunetune search
--model` does): `unseen_nets:regnet` (bench/unseen_nets.py) is an architecture outside the zoo,
written as a user would, for the check on a model the search was not designed on; `--first-seed`
picks seeds nobody tuned for.

Runs go to worker processes (`--workers`, one torch thread each), studies to per-run SQLite files
in the scratch folder (a stopped bench resumes: finished runs are reused; a run that was cut off
continues its study with a new timeout window, which the report cannot tell apart). No MLflow.
"""

from __future__ import annotations

import _common

_common.ensure_env()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from multiprocessing import get_context  # noqa: E402
from pathlib import Path  # noqa: E402

STRATEGIES = {
    "targets": {"strategy": "targets", "screen": 0},
    "screened": {"strategy": "search"},
    "unscreened": {"strategy": "search", "screen": 0},
    "uniform": {"strategy": "uniform", "screen": 0},
    "global": {"strategy": "global", "screen": 0},
    "sensitivity": {"strategy": "sensitivity", "screen": 0},
    "allocation": {"strategy": "search", "screen": 0, "parametrization": "allocation"},
}
OBJECTIVES = ["accuracy", "macs"]


def parse(argv: list[str] | None) -> argparse.Namespace:
    from prunetune.config.parts import FinetuneRecipe

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", default="resnet18,mobilenet_v2,vgg16_bn")
    p.add_argument("--strategies", default="targets,uniform,global")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1"
    )
    p.add_argument("--timeout", type=float, default=100.0, help="seconds of trial loop per run")
    p.add_argument(
        "--targets", default="0.05,0.02,0.01", help="MACs targets, fractions of the base's"
    )
    p.add_argument("--epochs", type=int, default=1, help="brief fine-tune epochs per trial")
    p.add_argument("--subset", type=int, default=1000, help="brief fine-tune images per epoch")
    p.add_argument(
        "--lr-scaling",
        type=float,
        default=FinetuneRecipe.lr_scaling,
        help="the brief fine-tune's learning-rate boost for heavily pruned configs (prunetune's "
        "--lr-scaling); the runs committed before it existed are --lr-scaling 0",
    )
    p.add_argument(
        "--screen", type=int, default=8, help="configs screened per full trial (screened)"
    )
    p.add_argument(
        "--candidates", type=int, default=8, help="allocations scored per full trial (targets)"
    )
    p.add_argument(
        "--ratio-min",
        type=float,
        default=0.5,
        help="every strategy's lowest ratio: the targets "
        "(<= 5 %% of MACs) need ratios around 0.8-0.9, so the budget is not spent on light pruning",
    )
    p.add_argument(
        "--sweep-step",
        type=float,
        default=0.01,
        help="ratio grid of the sweeps (uniform, global, "
        "sensitivity): fine enough that a sweep can use its --timeout (the search's per-group grid "
        "is 0.05)",
    )
    p.add_argument("--base-epochs", type=int, default=5)
    p.add_argument("--final-epochs", type=int, default=2)
    p.add_argument("--final-lr", type=float, default=5e-4)
    p.add_argument("--spearman-configs", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--name",
        default="deep_search",
        help="results file name (e.g. deep_search_300s for a run at another budget)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a smoke run: the report goes to the scratch "
        "folder marked SMOKE, never to bench/results",
    )
    return p.parse_args(argv)


def _base_recipe(args):
    from prunetune.models import Recipe

    return Recipe(epochs=args["base_epochs"], lr=1e-3, batch_size=64)


def _config(args: dict, net: str, strategy: str, seed: int, workdir: Path):
    from prunetune.config import SearchSettings

    label = re.sub(r"[^A-Za-z0-9._-]", "_", net)  # a user model's `package.module:function`
    name = (
        f"{label}-{strategy}-s{seed}-t{args['timeout']:g}-e{args['epochs']}-n{args['subset']}"
        f"-r{args['ratio_min']:g}"
    )
    if strategy == "screened":
        name += f"-k{args['screen']}"
    if strategy == "targets":
        name += f"-c{args['candidates']}"
    if args["lr_scaling"]:
        name += f"-ls{args['lr_scaling']:g}"
    sweep = STRATEGIES[strategy]["strategy"] in ("uniform", "global", "sensitivity")
    if sweep:
        name += f"-st{args['sweep_step']:g}"
    return SearchSettings.from_flat(
        model=net,
        dataset="mnist5k",
        base_epochs=args["base_epochs"],
        seed=seed,
        study=name,
        storage=f"sqlite:///{workdir / 'studies' / (name + '.db')}",
        trials=100_000,
        timeout=args["timeout"],
        objectives=list(OBJECTIVES),
        bits=[32],
        epochs=args["epochs"],
        subset=args["subset"],
        lr_scaling=args["lr_scaling"],
        ratio_min=args["ratio_min"],
        fps_repeats=3,
        threads=1,
        keep_all_weights=True,
        ratio_step=args["sweep_step"] if sweep else 0.05,
        **{"screen": args["screen"], **STRATEGIES[strategy]},
        **({"candidates": args["candidates"]} if strategy == "targets" else {}),
    )


def task_base(args: dict, net: str, workdir: str) -> dict:
    """Train (or find cached) the net's base; its MACs and accuracies."""
    import torch

    from prunetune.data import create_dataset
    from prunetune.measure import count_macs
    from prunetune.models import get_base_model

    torch.set_num_threads(1)
    os.chdir(workdir)
    bundle = create_dataset("mnist5k")
    base = get_base_model(net, bundle, recipe=_base_recipe(args), seed=0)
    return {
        "net": net,
        "macs": count_macs(base.model, bundle.example_input(1)),
        **base.meta["metrics"],
        "train_seconds": base.meta.get("train_seconds"),
    }


def task_run(args: dict, net: str, strategy: str, seed: int, workdir: str) -> dict:
    """One timed search (reused when its summary file exists)."""
    import torch

    from prunetune.search.optuna_runner import run_search
    from prunetune.search.screening import screen_stats
    from prunetune.search.study import load_existing
    from prunetune.search.target_report import proxy_quality

    torch.set_num_threads(1)
    os.chdir(workdir)
    cfg = _config(args, net, strategy, seed, Path(workdir))
    done = Path(workdir) / "runs" / f"{cfg.study_name}.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    result = run_search(cfg)
    wall = time.perf_counter() - t0
    study = load_existing(cfg.stores.storage_url, cfg.study_name)
    stats = screen_stats(study) or {}
    stats |= proxy_quality(study) or {}
    stats["configs_screened"] = stats.get("configs_screened", 0) + _candidates_scored(cfg, study)
    out = {
        "net": net,
        "strategy": strategy,
        "seed": seed,
        "study": cfg.study_name,
        "wall_s": wall,
        "full_trials": sum(r.state in ("complete", "rejected", "failed") for r in result.records),
        "configs_screened": stats.get("configs_screened", 0),
        "screen_s": stats.get("screen_s", 0.0),
        "hypervolume": result.hypervolume[-1] if result.hypervolume else 0.0,
        "proxy_spearman": stats.get("proxy_spearman"),
        "proxy_pairs": stats.get("proxy_pairs"),
        "trials": [
            {
                "number": r.number,
                "state": r.state,
                "accuracy": r.metrics.get("accuracy"),
                "macs": r.metrics.get("macs"),
                "weights": r.weights,
                "params": r.params,
                "total_s": r.timings.get("total_s"),
            }
            for r in result.records
        ],
    }
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(out))
    return out


def _candidates_scored(cfg, study) -> int:
    """Candidates the targets planner scored with its proxy (0 for other strategies)."""
    import optuna

    names = {
        s.study_name
        for s in optuna.get_all_study_summaries(cfg.stores.storage_url, include_best_trial=False)
    }
    return sum(
        len(
            optuna.load_study(study_name=n, storage=cfg.stores.storage_url).get_trials(
                deepcopy=False
            )
        )
        for n in names
        if n.startswith(study.study_name + ".target-")
    )


def _rho(values: list) -> str:
    known = [v for v in values if v is not None]
    return _common.ms(known, ".2f") if known else "-"


def final_key(args: dict, weights: str, seed: int) -> str:
    """The cache name of one final fine-tune (the same weights, seed and recipe give the same
    result)."""
    import hashlib

    text = f"{weights}|{seed}|{args['final_epochs']}|{args['final_lr']:g}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def task_final(args: dict, weights: str, seed: int, workdir: str, net: str) -> dict:
    """The final recipe on one trial's weights (of `net`, named so a user model's file is rebuilt
    from its code): brief test accuracy (as searched), then
    --final-epochs on the whole training split, batch norms re-estimated, test accuracy (reused
    from workdir/finals/ when this final already ran)."""
    cached = Path(workdir) / "finals" / f"{final_key(args, weights, seed)}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    import torch

    from prunetune.compress import load_compressed_file
    from prunetune.data import create_dataset
    from prunetune.models import Recipe, evaluate, recalibrate_bn, train
    from prunetune.search.workload import recalibration_sampler

    torch.set_num_threads(1)
    os.chdir(workdir)
    bundle = create_dataset("mnist5k")
    model, _ = load_compressed_file(weights, model=net)
    brief = evaluate(model, bundle.test)["accuracy"]
    t0 = time.perf_counter()
    train(
        model,
        bundle.train,
        Recipe(epochs=args["final_epochs"], lr=args["final_lr"], batch_size=64),
        seed=seed,
    )
    recalibrate_bn(model, bundle.train, sampler=recalibration_sampler(bundle, seed), batch_size=64)
    out = {
        "weights": weights,
        "seed": seed,
        "brief_test": brief,
        "final_test": evaluate(model, bundle.test)["accuracy"],
        "final_s": time.perf_counter() - t0,
    }
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(out))
    return out


def best_within(run: dict, cap: float) -> dict | None:
    """The complete trial with the best validation accuracy at MACs <= cap (None: none)."""
    ok = [
        t for t in run["trials"] if t["state"] == "complete" and t["macs"] <= cap and t["weights"]
    ]
    return max(ok, key=lambda t: (t["accuracy"], -t["macs"])) if ok else None


def spread_over_macs(runs: list[dict], k: int) -> list[dict]:
    """k complete trials of these runs evenly spread over their MACs (distinct weights)."""
    pool = sorted(
        (
            dict(t, seed=r["seed"])
            for r in runs
            for t in r["trials"]
            if t["state"] == "complete" and t["weights"]
        ),
        key=lambda t: t["macs"],
    )
    if len(pool) <= k:
        return pool
    return [pool[round(i * (len(pool) - 1) / (k - 1))] for i in range(k)] if k > 1 else pool[:1]


def spearman(xs: list[float], ys: list[float]) -> float | None:
    from scipy.stats import spearmanr

    return float(spearmanr(xs, ys).statistic) if len(xs) >= 3 else None


def main(argv: list[str] | None = None) -> int:
    ns = parse(argv)
    args = {k: v for k, v in vars(ns).items()}
    nets, strategies = ns.nets.split(","), ns.strategies.split(",")
    targets = [float(x) for x in ns.targets.split(",")]
    workdir = _common.scratch("deep_search", ns.smoke)
    facts = _common.machine_facts()
    pool = ProcessPoolExecutor(max_workers=ns.workers, mp_context=get_context("spawn"))
    t0 = time.perf_counter()
    bases = {
        b["net"]: b for b in pool.map(task_base, *zip(*[(args, n, str(workdir)) for n in nets]))
    }
    # interleaved: the runs in flight at any time are of different strategies (same load for all)
    specs = [
        (args, n, s, seed, str(workdir))
        for n in nets
        for seed in range(ns.first_seed, ns.first_seed + ns.seeds)
        for s in strategies
    ]
    runs = list(pool.map(task_run, *zip(*specs)))
    picks, finals, seeds = {}, {}, {r["study"]: r["seed"] for r in runs}
    net_of: dict[str, str] = {}  # weights file -> net
    for run in runs:
        for target in targets:
            best = best_within(run, target * bases[run["net"]]["macs"])
            picks[(run["study"], target)] = best
            if best:
                finals[(best["weights"], run["seed"])] = None
                net_of[best["weights"]] = run["net"]
    checks = {
        n: spread_over_macs([r for r in runs if r["net"] == n], ns.spearman_configs) for n in nets
    }
    for n, trials in checks.items():
        for t in trials:
            finals[(t["weights"], t["seed"])] = None
            net_of[t["weights"]] = n
    keys = list(finals)
    for key, res in zip(
        keys,
        pool.map(task_final, *zip(*[(args, w, s, str(workdir), net_of[w]) for w, s in keys])),
    ):
        finals[key] = res
    pool.shutdown()
    facts["wall_s"] = time.perf_counter() - t0
    _common.finish_facts(facts)
    data = {
        "command": _common.command("deep_search.py", argv if argv is not None else os.sys.argv[1:]),
        "machine": facts,
        "args": args,
        "smoke": ns.smoke,
        "bases": bases,
        "runs": runs,
        "targets": targets,
        "picks": {
            f"{s}|{t}": (None if p is None else {**p, **finals[(p["weights"], seeds[s])]})
            for (s, t), p in picks.items()
        },
        "spearman": {
            n: {"configs": [{**t, **finals[(t["weights"], t["seed"])]} for t in ts]}
            for n, ts in checks.items()
        },
    }
    for n, block in data["spearman"].items():
        block["rho"] = spearman(
            [c["brief_test"] for c in block["configs"]], [c["final_test"] for c in block["configs"]]
        )
    render(data, workdir if ns.smoke else None)
    return 0


def render(data: dict, out: Path | None) -> None:
    """The Markdown report (and the JSON with every raw number)."""
    args, bases, runs, targets = data["args"], data["bases"], data["runs"], data["targets"]
    title = "# Search quality on deep networks at equal wall time (issue 13)"
    lines = [
        title + (" -- SMOKE RUN, NOT EVIDENCE" if data["smoke"] else ""),
        "",
        f"Command: `{data['command']}`",
        "",
        _common.machine_line(data["machine"], "1 torch thread per worker"),
        "",
        " ".join(__doc__.split("\n\n")[1].split()),
        "",
        f"Budgets: --timeout {args['timeout']:g} s per run; brief fine-tune "
        f"{args['epochs']} epoch(s) x "
        f"{args['subset']} images; ratios >= {args['ratio_min']:g} (sweeps on a "
        f"{args['sweep_step']:g} grid, the search's per-group grid 0.05); screening "
        f"{args['screen']} configs per full trial; final recipe "
        f"{args['final_epochs']} epoch(s) on the whole training split at lr {args['final_lr']:g}.",
        "",
    ]
    for net in bases:
        b = bases[net]
        lines += [
            f"## {net} (base {b['macs'] / 1e6:.1f} M MACs, "
            f"test {b.get('test_accuracy', float('nan')):.3f})",
            "",
        ]
        rows = []
        for strategy in dict.fromkeys(r["strategy"] for r in runs if r["net"] == net):
            mine = [r for r in runs if r["net"] == net and r["strategy"] == strategy]
            cells = []
            for t in targets:
                accs = [
                    data["picks"][f"{r['study']}|{t}"]["final_test"]
                    for r in mine
                    if data["picks"][f"{r['study']}|{t}"] is not None
                ]
                miss = len(mine) - len(accs)
                cells.append(
                    (_common.ms(accs) if accs else "-") + (f" ({miss} run(s) none)" if miss else "")
                )
            rows.append(
                [
                    strategy,
                    *cells,
                    _common.ms([r["configs_screened"] for r in mine], ".0f"),
                    _common.ms([r["full_trials"] for r in mine], ".0f"),
                    _common.ms([r["hypervolume"] for r in mine], ".3f"),
                    _rho([r.get("proxy_spearman") for r in mine]),
                ]
            )
        lines += _common.table(
            [
                "strategy",
                *[f"test acc at <= {t:.0%} MACs" for t in targets],
                "configs screened",
                "full trials",
                "hypervolume",
                "proxy rho (within target)",
            ],
            rows,
        )
        sp = data["spearman"][net]
        rho = "n/a" if sp["rho"] is None else f"{sp['rho']:.2f}"
        lines += [
            "",
            f"Proxy check: Spearman rho of brief vs final fine-tune test accuracy over "
            f"{len(sp['configs'])} configs: **{rho}**.",
            "",
        ]
    lines += [
        "Seconds per full trial vs per screened config: see `cost_anatomy.md` (part 3); "
        "per run here: "
        + "; ".join(
            f"{r['study']}: {r['full_trials']} full trials, {r['configs_screened']} screened "
            f"({r['screen_s']:.0f} s screening) in {r['wall_s']:.0f} s"
            for r in runs[:6]
        )
        + (" ..." if len(runs) > 6 else "")
        + "."
    ]
    _common.write(args.get("name", "deep_search"), "\n".join(lines) + "\n", data, out)


if __name__ == "__main__":
    raise SystemExit(main())
