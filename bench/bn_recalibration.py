"""Batch-norm recalibration after fine-tuning: validation accuracy of pruned models with and
without.

    python bench/bn_recalibration.py [--models resnet18,mobilenet_v2] [--seeds 2] [--base-epochs 2]

For each model (base trained on mnist5k for --base-epochs, or taken from the cache), each uniform
pruning ratio of the search's warm start (0.5 and 0.75 on every group, float weights, L2
importance) and each fine-tune budget (1 epoch on 500 images: the scaled-down search_quality
bench; 3 epochs on 2,500: the search default), the pruned model is fine-tuned exactly as a trial
does (Adam, lr 1e-3, cosine, class-balanced subset, trial seed) and scored on the validation split
twice: as it comes out of fine-tuning, and after `recalibrate_bn` (batch-norm statistics
re-estimated on min(subset, 1,000) class-balanced training images, what a trial now does). Both
numbers come from the same fine-tuned weights. Writes bn_recalibration.md and bn_recalibration.json.
"""

from __future__ import annotations

import _common

_common.ensure_env()

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

BUDGETS = {"1 x 500": (1, 500), "3 x 2,500 (default)": (3, 2500)}


def run_model(model: str, seeds: int, base_epochs: int) -> list[dict]:
    from prunetune.compress import compress
    from prunetune.config import SearchSettings
    from prunetune.data import BalancedSubsetSampler
    from prunetune.models import Recipe, evaluate, recalibrate_bn, train
    from prunetune.search.objective import prepare_search, trial_seed
    from prunetune.search.workload import RECALIBRATION_IMAGES, recalibration_sampler

    cfg = SearchSettings.from_flat(
        model=model, dataset="mnist5k", base_epochs=base_epochs, bits=[32]
    )
    setup = prepare_search(
        cfg, weights_dir=_common.scratch("bn_recalibration", False) / "w", log=print
    )
    bundle, example = setup.bundle, setup.example_input()
    rows = []
    for params in setup.space.warm_start()[:2]:
        config = setup.space.decode(params)
        ratio = max(config.ratios.values())
        pruned = compress(setup.base.model, config, example, seed=0)
        for budget, (epochs, subset) in BUDGETS.items():
            for s in range(seeds):
                seed = trial_seed(0, s)
                model_ft = copy.deepcopy(pruned)
                sampler = BalancedSubsetSampler(
                    bundle.train_targets, per_class=subset // bundle.num_classes, seed=seed
                )
                t0 = time.perf_counter()
                train(
                    model_ft,
                    bundle.train,
                    Recipe(epochs=epochs, lr=1e-3, batch_size=64),
                    seed=seed,
                    sampler=sampler,
                )
                ft_s = time.perf_counter() - t0
                plain = evaluate(model_ft, bundle.val)["accuracy"]
                t1 = time.perf_counter()
                recalibrate_bn(
                    model_ft,
                    bundle.train,
                    sampler=recalibration_sampler(bundle, seed, min(subset, RECALIBRATION_IMAGES)),
                )
                recal_s = time.perf_counter() - t1
                fixed = evaluate(model_ft, bundle.val)["accuracy"]
                rows.append(
                    {
                        "model": model,
                        "ratio": ratio,
                        "budget": budget,
                        "seed": seed,
                        "base_val": setup.base_metrics["accuracy"],
                        "without": plain,
                        "with": fixed,
                        "finetune_s": ft_s,
                        "recalibrate_s": recal_s,
                    }
                )
                print(rows[-1], flush=True)
    return rows


def markdown(rep: dict) -> str:
    rows = rep["rows"]
    table = []
    keys = sorted(
        {(r["model"], r["ratio"], r["budget"]) for r in rows}, key=lambda k: (k[0], k[1], k[2])
    )
    for model, ratio, budget in keys:
        rs = [r for r in rows if (r["model"], r["ratio"], r["budget"]) == (model, ratio, budget)]

        def med(key):
            return statistics.median(r[key] for r in rs)

        def span(key):
            return f"{min(r[key] for r in rs):.3f}..{max(r[key] for r in rs):.3f}"

        table.append(
            [
                model,
                f"{ratio:.2f}",
                budget,
                f"{rs[0]['base_val']:.3f}",
                f"{med('without'):.3f} ({span('without')})",
                f"{med('with'):.3f} ({span('with')})",
                f"{med('finetune_s'):.1f}",
                f"{med('recalibrate_s'):.2f}",
            ]
        )
    return "\n".join(
        [
            *_common.header(
                "Batch-norm recalibration after fine-tuning",
                rep["command"],
                rep["facts"],
                "torch default threads",
                __doc__,
            ),
            *_common.table(
                [
                    "model",
                    "ratio",
                    "fine-tune (epochs x images)",
                    "base val acc",
                    f"val acc without, median (range over {rep['seeds']} seeds)",
                    "with recalibration",
                    "fine-tune s",
                    "recalibration s",
                ],
                table,
            ),
            "",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet18,mobilenet_v2")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--base-epochs", type=int, default=2)
    args = ap.parse_args()
    facts = _common.machine_facts()
    rows = [r for m in args.models.split(",") for r in run_model(m, args.seeds, args.base_epochs)]
    rep = {
        "command": _common.command("bn_recalibration.py", sys.argv[1:]),
        "seeds": args.seeds,
        "rows": rows,
        "facts": _common.finish_facts(facts),
    }
    _common.write("bn_recalibration", markdown(rep), rep)


if __name__ == "__main__":
    main()
