"""`prunetune train` and `prunetune sensitivity`: the base model, built from the Task and
BaseRecipe parts of the settings, so that the recipe `search` reads as --base-* (train's --epochs,
--lr, --batch-size, --seed) finds the same cached base."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from prunetune import render
from prunetune.cli.console import log
from prunetune.cli.settings_flags import add_part_flags, csv_list, part_from_args
from prunetune.errors import ConfigError, PrunetuneError

# train's names for the BaseRecipe's flags (search's --base-epochs ... work too)
TRAIN_NAMES = {f"base_{n}": (n,) for n in ("epochs", "lr", "batch_size", "seed")}
SCAN_DEFAULTS = {"ratios": [0.25, 0.5, 0.75, 0.9], "max_drop": 0.1}


def _base_of(task, recipe, measurement=None):
    """The base model of the Task and BaseRecipe parts (cached, else trained now), on the device
    and with the training threads of `measurement` (None: the CPU, threads chosen by torch)."""
    from prunetune.data import create_dataset
    from prunetune.models import get_base_model, resolve_device
    from prunetune.search.objective import base_recipe

    where = {}
    if measurement is not None:
        where = {
            "device": resolve_device(measurement.device),
            "train_threads": measurement.train_threads,
        }
    bundle = create_dataset(task.dataset, data_root=task.data_root)
    base = get_base_model(
        task.model,
        bundle,
        recipe=base_recipe(recipe),
        seed=recipe.seed,
        checkpoint=task.checkpoint,
        log=log,
        **where,
    )
    return bundle, base


def cmd_train(args) -> int:
    from prunetune.models import save_checkpoint

    task = part_from_args(args, "task")
    try:
        recipe = part_from_args(args, "base")
    except ConfigError as exc:  # the BaseRecipe's keys under train's flag names
        raise ConfigError(
            re.sub(r"\bbase_(\w+)", lambda m: "--" + m[1].replace("_", "-"), str(exc))
        ) from None
    bundle, base = _base_of(task, recipe, part_from_args(args, "measurement"))
    if args.out:
        save_checkpoint(args.out, base.model, base.meta)
    m = base.meta["metrics"]
    print(
        f"{task.model} on {bundle.name}: val accuracy {m['val_accuracy']:.2%}, "
        f"test accuracy {m['test_accuracy']:.2%}"
    )
    print(f"checkpoint: {args.out or base.path}")
    return 0


def train_flags(q: argparse.ArgumentParser) -> None:
    add_part_flags(q, "task", skip=("checkpoint",))  # it trains one
    add_part_flags(q, "base", TRAIN_NAMES)
    add_part_flags(q, "measurement", skip=("runtime", "threads", "fps_repeats"))
    q.add_argument("--out", help="also write the checkpoint here")


def _check_scan_flags(args) -> None:
    """The scan's own numbers, before the base model is trained (PrunetuneError, one line)."""
    for r in args.ratios:
        if not 0.0 <= r < 1.0:
            raise PrunetuneError(f"ratios must be in [0, 1), got {r}")
    if not 0.0 <= args.max_drop <= 1.0:
        raise PrunetuneError(f"--max-drop is a fraction in [0, 1], got {args.max_drop}")


def cmd_sensitivity(args) -> int:
    from prunetune import sensitivity
    from prunetune.compress import inventory

    _check_scan_flags(args)
    task = part_from_args(args, "task")
    bundle, base = _base_of(task, part_from_args(args, "base"))
    inv = inventory(base.model, bundle.example_input(1))
    rows = sensitivity.scan(
        base.model,
        bundle,
        [g.name for g in inv.groups],
        args.ratios,
        importance=args.importance,
        base_accuracy=base.meta["metrics"]["val_accuracy"],
    )
    _write_scan(args, task, inv, rows)
    if args.format == "json":
        print(render.to_json(rows))
    else:
        print(
            render.table(
                rows,
                ["group", "ratio", "accuracy", "drop", "macs"],
                headers={"accuracy": "val acc (no fine-tune)"},
            )
        )
    return 0


def _write_scan(args, task, inv, rows: list[dict]) -> None:
    """--plot and --space-out: the scan as a PNG, the default space narrowed by it."""
    from prunetune import sensitivity
    from prunetune.config import SpaceSpec
    from prunetune.search.objective import build_space

    if args.plot:
        title = f"{task.model} on {task.dataset}: sensitivity"
        sensitivity.plot(rows, Path(args.plot), title=title)
        log(f"wrote {args.plot}")
    if args.space_out:
        space = build_space(SpaceSpec(), task.model, inv)
        space = sensitivity.narrow(space, rows, max_drop=args.max_drop)
        Path(args.space_out).write_text(space.to_yaml())
        narrowed = f"ratio ranges narrowed to accuracy drops <= {args.max_drop:.0%}"
        log(f"wrote {args.space_out} ({narrowed})")


def sensitivity_flags(q: argparse.ArgumentParser) -> None:
    add_part_flags(q, "task")
    add_part_flags(q, "base", {"base_seed": ("seed",)})
    q.add_argument("--ratios", type=csv_list(float), default=SCAN_DEFAULTS["ratios"])
    q.add_argument("--importance", default="l2")
    q.add_argument("--plot", help="write a PNG of accuracy vs ratio per group")
    q.add_argument("--space-out", help="write a search space narrowed by the scan")
    q.add_argument(
        "--max-drop",
        type=float,
        default=SCAN_DEFAULTS["max_drop"],
        help="accuracy drop allowed when narrowing",
    )
    q.add_argument("--format", choices=["table", "json"], default="table")
