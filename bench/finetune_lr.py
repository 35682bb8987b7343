"""The brief fine-tune's learning rate against how much a model was pruned.

    python bench/finetune_lr.py [--model mnist_net] [--targets 0.5,0.15,0.05,0.02]
        [--lrs 0.001,0.003,0.01] [--seeds 3] [--epochs 3] [--subset 2500] [--base-epochs 5]

For each MACs target (a fraction of the base's), the uniform config that meets it (every group
pruned alike, float weights, L2 importance: the `targets` strategy's uniform baseline) is
fine-tuned exactly as a trial does (Adam, cosine, --epochs on --subset class-balanced images,
trial seeds, batch norms re-estimated) once per learning rate: each fixed rate of --lrs, and the
default rule (`pruned_lr`: 0.001 down to a quarter of the MACs, below it x (0.25 / kept) **
1.5, at most sqrt(fine-tune steps) x and 10x). Validation and test
accuracy, median over --seeds with the range. The base is trained on mnist5k (or taken from the
cache) with --base-epochs. Writes finetune_lr.md and finetune_lr.json (`--name` for another).
"""

from __future__ import annotations

import _common

_common.ensure_env()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

RULE = "rule"


def run(args: argparse.Namespace) -> list[dict]:
    from prunetune.config import SearchSettings
    from prunetune.compress import compress
    from prunetune.measure import count_macs
    from prunetune.search.objective import prepare_search, trial_seed
    from prunetune.spaces.targets import ALLOC

    cfg = SearchSettings.from_flat(
        model=args.model,
        dataset="mnist5k",
        base_epochs=args.base_epochs,
        epochs=args.epochs,
        subset=args.subset,
        bits=[32],
    )
    setup = prepare_search(cfg, weights_dir=_common.scratch("finetune_lr", False), log=print)
    space, plain, example = setup.space, setup.workload, setup.example_input()
    base_test = plain.test_accuracy(setup.base.model)
    rows = []
    for target in args.targets:
        params = space.candidate_params({ALLOC + d: 0.0 for d in space.dims()}, target)
        for lr in [*args.lrs, RULE]:
            setup.workload = dataclasses.replace(
                plain,
                lr=cfg.finetune.lr if lr == RULE else lr,
                lr_scaling=cfg.finetune.lr_scaling if lr == RULE else 0.0,
            )
            for s in range(args.seeds):
                seed = trial_seed(0, s)
                model = compress(setup.base.model, space.decode(params), example, seed=seed)
                kept = count_macs(model, example) / setup.base_metrics["macs"]
                t0 = time.perf_counter()
                setup.workload.finetune(model, seed, setup.device, kept)
                setup.workload.recalibrate(model, seed, setup.device)
                rows.append(
                    {
                        "model": args.model,
                        "target": target,
                        "kept": kept,
                        "lr": lr,
                        "lr_used": setup.workload.lr_for(kept),
                        "seed": seed,
                        "val": setup.workload.evaluate(model, setup.device)["accuracy"],
                        "test": setup.workload.test_accuracy(model),
                        "finetune_s": time.perf_counter() - t0,
                        "base_val": setup.base_metrics["accuracy"],
                        "base_test": base_test,
                    }
                )
                print(rows[-1], flush=True)
    return rows


def _cell(rs: list[dict], key: str) -> str:
    vals = [100 * r[key] for r in rs]
    return f"{statistics.median(vals):.1f} ({min(vals):.1f}..{max(vals):.1f})"


def markdown(rep: dict) -> str:
    rows, lrs = rep["rows"], [*rep["lrs"], RULE]
    table = []
    for target in rep["targets"]:
        at = [r for r in rows if r["target"] == target]
        medians = {lr: statistics.median(r["test"] for r in at if r["lr"] == lr) for lr in lrs}
        best = max(medians, key=medians.get)
        cells = []
        for lr in lrs:
            cell = _cell([r for r in at if r["lr"] == lr], "test")
            cells.append(f"**{cell}**" if lr == best else cell)
        rule_lr = next(r["lr_used"] for r in at if r["lr"] == RULE)
        table.append([f"{target:g}", f"{at[0]['kept']:.3f}", *cells, f"{rule_lr:.4f}"])
    base = rows[0]
    return "\n".join(
        [
            *_common.header(
                "The brief fine-tune's learning rate against how much a model was pruned",
                rep["command"],
                rep["facts"],
                "torch default threads",
                __doc__,
            ),
            f"{rep['model']}: base {100 * base['base_val']:.1f} % validation, "
            f"{100 * base['base_test']:.1f} % test. Test accuracy (%), median (range) over "
            f"{rep['seeds']} seeds; the best median in bold.",
            "",
            *_common.table(
                [
                    "target",
                    "kept MACs",
                    *[f"lr {lr:g}" for lr in rep["lrs"]],
                    "the rule (pruned_lr)",
                    "the rule's lr",
                ],
                table,
            ),
            "",
        ]
    )


def main() -> None:
    floats = lambda s: [float(x) for x in s.split(",")]  # noqa: E731
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mnist_net")
    ap.add_argument("--targets", type=floats, default=[0.5, 0.15, 0.05, 0.02])
    ap.add_argument("--lrs", type=floats, default=[0.001, 0.003, 0.01])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--subset", type=int, default=2500)
    ap.add_argument("--base-epochs", type=int, default=5)
    ap.add_argument("--name", default="finetune_lr")
    args = ap.parse_args()
    facts = _common.machine_facts()
    rows = run(args)
    rep = {
        "command": _common.command("finetune_lr.py", sys.argv[1:]),
        "model": args.model,
        "targets": args.targets,
        "lrs": args.lrs,
        "seeds": args.seeds,
        "rows": rows,
        "facts": _common.finish_facts(facts),
    }
    _common.write(args.name, markdown(rep), rep)


if __name__ == "__main__":
    main()
