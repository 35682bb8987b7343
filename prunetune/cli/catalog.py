"""`prunetune models`, `datasets`, `info` and `space`: what can be compressed and how a model's
layers, groups and default search space look (no training)."""

from __future__ import annotations

import argparse
from pathlib import Path

from prunetune import render
from prunetune.cli.console import log
from prunetune.cli.settings_flags import FLAG_HELP, csv_list, setting_default
from prunetune.config.checks import GRANULARITIES
from prunetune.errors import PrunetuneError


def cmd_models(args) -> int:
    from prunetune.models import MODELS

    for name in MODELS.names():
        doc = (MODELS.get(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:14s} {doc}")
    print("torchvision:NAME  any torchvision classification model (untrained)")
    print(
        "package.module:function  your own factory "
        "(called with in_channels, num_classes, input_size)"
    )
    return 0


def cmd_datasets(args) -> int:
    from prunetune.data import DATASETS

    for name in DATASETS.names():
        doc = (DATASETS.get(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:14s} {doc}")
    return 0


def no_flags(q: argparse.ArgumentParser) -> None:
    """`models` and `datasets` take none."""


def _shape_for(args) -> tuple[tuple[int, int, int], int]:
    if args.dataset:
        from prunetune.data import create_dataset

        b = create_dataset(args.dataset, data_root=getattr(args, "data_root", None))
        return b.input_shape, b.num_classes
    try:
        shape = tuple(int(x) for x in args.input_size.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise PrunetuneError(f"--input-size must be C,H,W (e.g. 3,32,32), got {args.input_size!r}")
    return shape, args.num_classes


def _layer_rows(model, per: dict) -> list[dict]:
    """One row per layer that has MACs or is a conv / linear layer."""
    import torch

    from prunetune.measure import count_params

    rows = []
    for name, m in model.named_modules():
        if name in per or isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            rows.append(
                {
                    "layer": name,
                    "type": type(m).__name__,
                    "in": getattr(m, "in_channels", getattr(m, "in_features", None)),
                    "out": getattr(m, "out_channels", getattr(m, "out_features", None)),
                    "macs": per.get(name, 0),
                    "params": count_params(m),
                }
            )
    return rows


def cmd_info(args) -> int:
    import torch

    from prunetune.compress import inventory
    from prunetune.measure import count_macs, count_params
    from prunetune.models import build_for

    shape, k = _shape_for(args)
    model = build_for(args.model, shape, k)
    example = torch.zeros(1, *shape)
    macs, per = count_macs(model, example, per_module=True)
    inv = inventory(model, example)
    groups = [
        {
            "group": g.name,
            "channels": g.channels,
            "macs_share": g.macs_share,
            "layers": len(g.layers),
        }
        for g in inv.groups
    ]
    data = {
        "model": args.model,
        "input_shape": list(shape),
        "num_classes": k,
        "macs": macs,
        "flops": 2 * macs,
        "params": count_params(model),
        "layers": _layer_rows(model, per),
        "groups": groups,
        "unprunable": [{"layer": n, "reason": r} for n, r in inv.skipped],
    }
    if args.format == "json":
        print(render.to_json(data))
    else:
        _print_info(data)
    return 0


def _print_info(data: dict) -> None:
    shape, macs = data["input_shape"], data["macs"]
    print(f"{data['model']}  input {'x'.join(map(str, shape))}  classes {data['num_classes']}")
    print(render.table(data["layers"], ["layer", "type", "in", "out", "macs", "params"]))
    print(f"\ntotal: {macs:,} MACs ({2 * macs:,} FLOPs = 2 x MACs), {data['params']:,} params\n")
    print(
        render.table(
            data["groups"],
            ["group", "channels", "macs_share", "layers"],
            headers={"macs_share": "MACs share"},
        )
    )
    for row in data["unprunable"]:
        print(f"left unpruned: {row['layer']} ({row['reason']})")


def cmd_space(args) -> int:
    import torch

    from prunetune.compress import inventory
    from prunetune.models import build_for
    from prunetune.spaces import SearchSpace

    shape, k = _shape_for(args)
    inv = inventory(build_for(args.model, shape, k), torch.zeros(1, *shape))
    space = SearchSpace.from_inventory(
        inv,
        granularity=args.granularity,
        ratio_max=args.ratio_max,
        ratio_step=args.ratio_step,
        bits=args.bits,
        model=args.model,
    )
    text = space.to_yaml()
    if args.out:
        Path(args.out).write_text(text)
        log(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def _shape_flags(q: argparse.ArgumentParser) -> None:
    """The model and input-shape flags of `info` and `space`."""
    q.add_argument("--model", default="mnist_net", help=FLAG_HELP["model"])
    q.add_argument("--dataset", help="take input shape and classes from this dataset")
    q.add_argument("--data-root", help=FLAG_HELP["data_root"])
    q.add_argument(
        "--input-size", default="1,28,28", help="C,H,W when no --dataset (default 1,28,28)"
    )
    q.add_argument("--num-classes", type=int, default=10, help="classes when no --dataset")


def info_flags(q: argparse.ArgumentParser) -> None:
    _shape_flags(q)
    q.add_argument("--format", choices=["table", "json"], default="table")


def space_flags(q: argparse.ArgumentParser) -> None:
    _shape_flags(q)
    q.add_argument("--granularity", choices=GRANULARITIES, default=setting_default("granularity"))
    q.add_argument("--ratio-max", type=float, default=setting_default("ratio_max"))
    q.add_argument("--ratio-step", type=float, default=setting_default("ratio_step"))
    q.add_argument("--bits", type=csv_list(int), default=setting_default("bits"))
    q.add_argument("--out", help="write to this file instead of stdout")
