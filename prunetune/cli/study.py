"""`prunetune search`, `pareto` and `export`: run or resume a study from the settings, show its
front, export a trial's model."""

from __future__ import annotations

import argparse
from pathlib import Path

from prunetune.cli.console import log
from prunetune.cli.settings_flags import (
    FLAG_HELP,
    add_settings_flags,
    settings_from_args,
)
from prunetune.config.parts import DEFAULT_STORAGE
from prunetune.errors import PrunetuneError

STUDY_HELP = (
    "study name (default: the only study in the storage, else mnist_net-mnist5k, what `search` "
    "uses)"
)


def cmd_search(args) -> int:
    from prunetune.search.api import search_and_report

    cfg = settings_from_args(args)
    if args.retrain_epochs and not args.export:
        raise PrunetuneError(
            "--retrain-epochs fine-tunes the model --export writes: give --export DIR too"
        )
    if args.retrain_epochs < 0:
        raise PrunetuneError(f"--retrain-epochs must be >= 0, got {args.retrain_epochs}")
    search_and_report(
        cfg, log=log, out=print, export_dir=args.export, retrain_epochs=args.retrain_epochs
    )
    return 0


def search_flags(q: argparse.ArgumentParser) -> None:
    add_settings_flags(q)
    after = q.add_argument_group("after the search")
    after.add_argument(
        "--export", metavar="DIR", help="after the search, export the selected model here"
    )
    after.add_argument(
        "--retrain-epochs",
        type=int,
        default=0,
        help="with --export: recovery fine-tune of the "
        "selected model on the whole training split before export (the card reports accuracy "
        "before and after; default 0)",
    )


def cmd_pareto(args) -> int:
    from prunetune.search.api import pareto_report, resolve_study

    print(
        pareto_report(
            resolve_study(args.study, args.storage), storage=args.storage, fmt=args.format
        )
    )
    return 0


def pareto_flags(q: argparse.ArgumentParser) -> None:
    q.add_argument("--study", help=STUDY_HELP)
    q.add_argument("--storage", default=DEFAULT_STORAGE)
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")


def cmd_export(args) -> int:
    from prunetune.export import check_output, export_model
    from prunetune.search.api import resolve_study

    check_output(args.out)  # before the study is even looked for: nothing written either way
    card = export_model(
        resolve_study(args.study, args.storage),
        storage=args.storage,
        out_dir=args.out,
        trial=args.trial,
        select=args.select,
        fmt=args.format,
        int8=args.int8,
        retrain_epochs=args.retrain_epochs,
        tracking_uri=args.tracking_uri,
        model=args.model,
        log=log,
    )
    print(card.summary())
    print(f"report card: {Path(args.out) / 'card.md'}")
    return 0


def export_flags(q: argparse.ArgumentParser) -> None:
    q.add_argument("--study", help=STUDY_HELP)
    q.add_argument("--storage", default=DEFAULT_STORAGE)
    q.add_argument("--tracking-uri", help=FLAG_HELP["tracking_uri"])
    pick = q.add_mutually_exclusive_group()
    pick.add_argument(
        "--trial", type=int, help="export this trial (default: the knee of the front)"
    )
    pick.add_argument("--select", help=FLAG_HELP["select"])
    q.add_argument("--format", choices=["onnx", "pt2", "state-dict"], default="onnx")
    q.add_argument(
        "--int8", action="store_true", help="ONNX Runtime static int8 (QDQ, per-channel)"
    )
    q.add_argument(
        "--retrain-epochs",
        type=int,
        default=0,
        help="fine-tune this many epochs on the full training split before export",
    )
    q.add_argument("--out", required=True, help="output folder (model, card.json, card.md)")
    q.add_argument(
        "--model",
        help="the package.module:function a study of a user model was searched with "
        "(needed to rebuild it: stored files never import code on their own)",
    )
