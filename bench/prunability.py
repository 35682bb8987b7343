"""Prunability over the registries: which torchvision and timm architectures prunetune prunes.

    python bench/prunability.py [--quick] [--all] [--jobs 2]
                                [--models timm:resnet10t,torchvision:convnext_tiny]

Runs `check` of tests/test_prunability.py (untrained model, small input, one torch thread; prune
every group at 0.3 and at random ratios in [0, 0.7); forward, output shape, fewer MACs, exact
reload from the compressed file) on every torchvision classification builder but the big variants
of a swept architecture, and the test's timm list (`--all` adds the big variants; the slow test
sweeps these minus BENCH_ONLY), and tabulates: how many were tried,
pruned and refused, the MACs cut at a uniform 0.3 per model, and the refused list with reasons.
A model whose check raises is reported as an error with the message. `--quick`: five models,
report in the scratch folder. Writes prunability.md and prunability.json.
"""

from __future__ import annotations

import _common

_common.ensure_env()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, str(_common.REPO))

QUICK = [
    "torchvision:resnet18",
    "torchvision:convnext_tiny",
    "torchvision:shufflenet_v2_x0_5",
    "torchvision:swin_t",
    "timm:resnet10t",
]


def _one(name: str) -> dict:
    import torch

    from tests.test_prunability import check

    torch.set_num_threads(1)
    try:
        return check(name).as_dict() | {"error": None}
    except Exception as exc:  # noqa: BLE001 - a broken contract is a row of the report
        return {
            "model": name,
            "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
        }


def run(names: list[str], jobs: int) -> list[dict]:
    """`check` of every name in `jobs` one-thread worker processes, rows in the order of `names`."""
    import multiprocessing

    rows = []
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for row in pool.imap(_one, names):
            print(f"{row['model']}: {_summary(row)}", flush=True)
            rows.append(row)
    return rows


def _summary(row: dict) -> str:
    if row["error"]:
        return f"ERROR {row['error']}"
    if row["refused"]:
        return f"refused ({row['reasons'][0][0] if row['reasons'] else 'no conv/linear layer'})"
    return (
        f"{row['groups']} groups, {row['reduction']:.1%} fewer MACs at 0.3, {row['seconds']:.1f} s"
    )


def report(rows: list[dict], facts: dict, argv: list[str], jobs: int) -> str:
    from tests.test_prunability import BENCH_ONLY, BIG_VARIANTS, NOT_SWEPT

    pruned = [r for r in rows if not r["error"] and not r["refused"]]
    refused = [r for r in rows if not r["error"] and r["refused"]]
    errors = [r for r in rows if r["error"]]
    md = [
        "# Prunability over the torchvision and timm registries",
        "",
        f"Command: `{_common.command('prunability.py', argv)}`",
        "",
        _common.machine_line(
            facts, f"{jobs} worker process{'es' if jobs > 1 else ''}, 1 torch thread each"
        ),
        "",
        "Protocol: `tests/test_prunability.py::check` per model: untrained (pretrained=False), 10 "
        "classes, 3x32x32 input (inception 75, googlenet/alexnet/squeezenet 64), every prunable "
        "group at 0.3 and at random ratios in [0, 0.7) (L1 importance); asserts forward works, "
        "same output shape, fewer MACs, and that save_compressed -> load_compressed_file gives "
        "identical outputs. The slow test `tests/test_prunability.py::test_prunability` sweeps "
        f"the same models but {', '.join(sorted(BENCH_ONLY))}. Big variants of a swept "
        "architecture (same code, minutes each on this machine) are left to `--all`: "
        f"{', '.join(sorted(BIG_VARIANTS))}.",
        "",
        f"**{len(rows)} tried: {len(pruned)} pruned, {len(refused)} refused (gracefully, layers "
        f"named), {len(errors)} errors.** Not tried: {', '.join(sorted(NOT_SWEPT))} (transformers "
        "whose builders fix a 224 px input; too slow for this sweep).",
        "",
        "## Pruned: MACs at a uniform 0.3",
        "",
    ]
    md += _common.table(
        [
            "model",
            "input",
            "groups",
            "layers left",
            "base MACs",
            "MACs cut at 0.3",
            "cut at random ratios",
            "s",
        ],
        [
            [
                r["model"],
                r["side"],
                r["groups"],
                r["refused_layers"],
                f"{r['macs']:,}",
                f"{r['reduction']:.1%}",
                f"{1 - r['macs_random'] / r['macs']:.1%}",
                f"{r['seconds']:.1f}",
            ]
            for r in pruned
        ],
    )
    low = [r for r in pruned if r["reduction"] < 0.25]
    md += ["", "## Pruned by less than 25 % at 0.3, with the reasons layers were left", ""]
    md += _common.table(
        ["model", "MACs cut", "reasons (layers)"],
        [
            [
                r["model"],
                f"{r['reduction']:.1%}",
                "; ".join(f"{why} ({n})" for why, n in r["reasons"]),
            ]
            for r in low
        ],
        "|---|---:|---|",
    )
    md += ["", "## Refused (nothing prunable), with the most frequent reason", ""]
    md += _common.table(
        ["model", "layers", "reason"],
        [
            [r["model"], r["refused_layers"], r["reasons"][0][0] if r["reasons"] else "-"]
            for r in refused
        ],
        "|---|---:|---|",
    )
    if errors:
        md += ["", "## Errors", ""] + _common.table(
            ["model", "error"], [[r["model"], r["error"]] for r in errors], "|---|---|"
        )
    return "\n".join(md) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--models", help="comma-separated names instead of the test's list")
    p.add_argument("--all", action="store_true", help="also the big variants the test skips")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one torch thread each)")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="re-render the Markdown from results/prunability.json",
    )
    args = p.parse_args()
    if args.report_only:
        data = json.loads((_common.RESULTS / "prunability.json").read_text())
        md = report(data["rows"], data["machine"], data["argv"], data["jobs"])
        (_common.RESULTS / "prunability.md").write_text(
            md.replace("Command: ", "Command (re-rendered with --report-only): ", 1)
        )
        return
    from tests.test_prunability import BENCHED, TIMM, TORCHVISION

    names = (
        args.models.split(",")
        if args.models
        else QUICK
        if args.quick
        else TORCHVISION + TIMM
        if args.all
        else BENCHED
    )
    facts = _common.machine_facts()
    rows = run(names, args.jobs)
    facts = _common.finish_facts(facts)
    out = _common.scratch("prunability", True) if args.quick or args.models else None
    _common.write(
        "prunability",
        report(rows, facts, sys.argv[1:], args.jobs),
        {"machine": facts, "argv": sys.argv[1:], "jobs": args.jobs, "rows": rows},
        out,
    )


if __name__ == "__main__":
    main()
