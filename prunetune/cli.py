"""Command-line interface: thin commands over library functions.

One place (`main`) turns user errors (PrunetuneError) into one line on stderr and exit code 2,
Ctrl-C / SIGTERM anywhere in a command into a one-line note (exit 130 / 143) saying how to
resume, and a full disk into one line (exit 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import signal
import sys
from pathlib import Path

from prunetune import interrupts, render
from prunetune.errors import EnvironmentFault, PrunetuneError
from prunetune.redact import scrub, watch

EXIT_FAULT = 1
EXIT_USER_ERROR = 2

FLAG_HELP = {
    "model": "model: a zoo name (see `prunetune models`), torchvision:NAME or package.module:function",
    "dataset": "dataset name (see `prunetune datasets`)",
    "data_root": "folder with the dataset's files (torchvision layouts, or class folders for imagefolder)",
    "checkpoint": "trained base model (prunetune checkpoint or a state_dict); default: train and cache one",
    "base_epochs": "epochs to train the base model when no checkpoint is given",
    "base_lr": "learning rate (Adam) of that base training; prunetune train's --lr",
    "base_batch_size": "batch size of that base training; prunetune train's --batch-size",
    "base_seed": "seed of that base training (kept apart from --seed so studies share one base)",
    "seed": "study seed: every trial's seed derives from it and the trial number",
    "study": "study name (default MODEL-DATASET); the same name resumes the study. Allowed: 1-100 "
    "letters, digits, '.', '_', '-', starting with a letter or digit, no '..'",
    "storage": "Optuna storage URL (default sqlite:///mlruns/optuna.db)",
    "tracking_uri": "MLflow tracking URI (default sqlite:///mlruns/mlflow.db)",
    "trials": "total number of finished trials in the study (resuming counts earlier ones)",
    "timeout": "stop starting trials after this many seconds of this run (the trial in flight "
    "finishes; with --trials: whichever comes first; each resume gets a new window)",
    "strategy": "targets (the front built at MACs targets: uniform and global ranking first, then "
    "allocations met by construction, ranked by a cheap proxy) | search (free multi-objective "
    "per-group search) | uniform (one ratio, swept) | global (torch-pruning's global ranking, "
    "target swept) | sensitivity (ratios from a sensitivity scan, swept)",
    "targets": "targets: comma list of MACs targets as fractions of the base's, e.g. 0.5,0.1,0.02 "
    "(default: 0.5,0.2,0.1,0.05,... down to what the space allows)",
    "candidates": "targets: allocations scored by the proxy per full trial (the best one is fine-tuned)",
    "proxy_steps": "targets: fine-tune steps of the proxy that ranks candidates (0: batch norms only; "
    "default: an eighth of the brief fine-tune's steps, at least 4)",
    "screen": "search: configs screened cheaply (pruned, batch norms re-estimated, no fine-tune) "
    "per full trial, the most promising (Pareto rank) promoted; 0: no screening (experimental)",
    "parametrization": "search: ratios (one per group, independent) | allocation (one MACs-weighted level + "
    "per-group allocations around it, AMC-style: most configs land near the level's MACs)",
    "sampler": "tpe | nsga2 | nsga3 | random | gp",
    "objectives": "comma list of accuracy, flops, macs, fps, size, params",
    "min_accuracy": "constraint: validation accuracy (fraction) at least this",
    "max_flops": "constraint: FLOPs at most this (checked before fine-tuning: rejected, not trained)",
    "space": "search space YAML (from `prunetune space`); default: derived from the model",
    "granularity": "ratio per group (layer), per block, or one global ratio",
    "ratio_min": "smallest pruning ratio searched",
    "ratio_max": "largest pruning ratio searched (< 1)",
    "ratio_step": "grid step of pruning ratios",
    "round_to": "round kept channels to a multiple of this",
    "bits": "comma list of bit-width choices per layer (2..8, 32 = float)",
    "importance": "comma list of filter-importance criteria to search (l1, l2, taylor, bn_scale, random)",
    "subset": "fine-tune on this many class-balanced training images per epoch (redrawn each epoch)",
    "epochs": "fine-tune epochs per trial",
    "lr": "fine-tune learning rate (Adam)",
    "batch_size": "fine-tune batch size",
    "distill": "weight of distillation from the base model (0 = off)",
    "device": "where base and trials train and evaluate: auto (CUDA if torch sees it), cpu, cuda or cuda:N; "
    "FPS is always measured on the CPU runtime",
    "runtime": "runtime whose FPS is measured and optimised: torch | onnxruntime | onnxruntime-int8",
    "threads": "threads for FPS measurement (training's: --train-threads)",
    "train_threads": "intra-op threads for training (fine-tune, base model, batch-norm "
    "re-estimation, screening): auto (per training run, its first steps timed at "
    "1 thread and at all cores, the faster kept) or a count",
    "fps_repeats": "timing samples per FPS measurement",
    "backend": "optuna (embedded, one process) or ray (parallel trials, Ray cluster)",
    "workers": "ray: trials at once",
    "cpus_per_trial": "ray: CPUs reserved per trial",
    "gpus_per_trial": "ray: GPUs reserved per trial",
    "address": "ray: cluster address (auto or HOST:PORT)",
    "keep_all_weights": "keep every trial's weights (default: only the Pareto front's)",
    "select": 'the model to export/register, e.g. "max fps where accuracy>=0.97" (default: the fewest MACs '
    "within --max-drop of the base's validation accuracy, else the knee)",
    "max_drop": "the default pick: the cheapest front member whose validation accuracy is at most this far "
    "below the base's (a fraction: 0.01 = 1 point)",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def _csv(kind):
    def parse(s: str):
        try:
            return [kind(x.strip()) for x in s.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma list of {kind.__name__}, got {s!r}"
            ) from None

    return parse


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    from prunetune.config import SearchConfig

    p.add_argument("--config", help="YAML file with the same keys as these flags (flags win)")
    list_types = {"objectives": str, "bits": int, "importance": str, "targets": float}
    for f in dataclasses.fields(SearchConfig):
        flag = "--" + f.name.replace("_", "-")
        text = _with_default(FLAG_HELP[f.name], _field_default(f))
        if f.name in list_types:
            p.add_argument(flag, type=_csv(list_types[f.name]), default=None, help=text)
        elif f.type in ("bool", bool):
            p.add_argument(flag, action="store_true", default=None, help=text)
        else:
            # a field of several types (train_threads: int | str) is a string the config checks
            types = [t for t in str(f.type).split(" | ") if t != "None"]
            kind = {"int": int, "float": float}.get(types[0], str) if len(types) == 1 else str
            p.add_argument(flag, type=kind, default=None, help=text)


def _field_default(f: dataclasses.Field):
    """A SearchConfig field's default without building a SearchConfig (whose validation imports
    torch: --help and argument errors must not)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _config_default(name: str):
    """The default of SearchConfig's field `name` (see _field_default)."""
    from prunetune.config import SearchConfig

    return _field_default(next(f for f in dataclasses.fields(SearchConfig) if f.name == name))


def _with_default(text: str, value) -> str:
    """A flag's help with its default appended (unless it has none or the text names it)."""
    if value is None or isinstance(value, bool) or "default" in text:
        return text
    shown = (
        ",".join(map(str, value))
        if isinstance(value, list)
        else f"{value:g}"
        if isinstance(value, float)
        else value
    )
    return f"{text} (default {shown})"


def _config_from_args(args):
    from prunetune.config import SearchConfig

    names = {f.name for f in dataclasses.fields(SearchConfig)}
    return SearchConfig.from_sources(
        args.config, {k: v for k, v in vars(args).items() if k in names}
    )


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- commands --------------------------------------------------------------------------------------
def cmd_models(args) -> int:
    from prunetune.models import MODELS

    for name in MODELS.names():
        doc = (MODELS.get(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:14s} {doc}")
    print("torchvision:NAME  any torchvision classification model (untrained)")
    print(
        "package.module:function  your own factory (called with in_channels, num_classes, input_size)"
    )
    return 0


def cmd_datasets(args) -> int:
    from prunetune.data import DATASETS

    for name in DATASETS.names():
        doc = (DATASETS.get(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:14s} {doc}")
    return 0


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
    layers = []
    for name, m in model.named_modules():
        if name in per or isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            ch = getattr(m, "out_channels", getattr(m, "out_features", None))
            cin = getattr(m, "in_channels", getattr(m, "in_features", None))
            layers.append(
                {
                    "layer": name,
                    "type": type(m).__name__,
                    "in": cin,
                    "out": ch,
                    "macs": per.get(name, 0),
                    "params": count_params(m),
                }
            )
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
        "layers": layers,
        "groups": groups,
        "unprunable": [{"layer": n, "reason": r} for n, r in inv.skipped],
    }
    if args.format == "json":
        print(render.to_json(data))
        return 0
    print(f"{args.model}  input {'x'.join(map(str, shape))}  classes {k}")
    print(render.table(layers, ["layer", "type", "in", "out", "macs", "params"]))
    print(f"\ntotal: {macs:,} MACs ({2 * macs:,} FLOPs = 2 x MACs), {data['params']:,} params\n")
    print(
        render.table(
            groups,
            ["group", "channels", "macs_share", "layers"],
            headers={"macs_share": "MACs share"},
        )
    )
    for n, r in inv.skipped:
        print(f"left unpruned: {n} ({r})")
    return 0


def _check_train_flags(args) -> None:
    """train's numbers in the ranges search uses for its base model (PrunetuneError, one line)."""
    import math

    from prunetune.config import MAX_SEED, check_train_threads

    if args.epochs < 1 or args.batch_size < 1:
        raise PrunetuneError(
            f"--epochs and --batch-size must be >= 1, got {args.epochs}, {args.batch_size}"
        )
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise PrunetuneError(f"--lr must be a finite number > 0, got {args.lr}")
    if not 0 <= args.seed < MAX_SEED:
        raise PrunetuneError(f"--seed must be in [0, 2**32), got {args.seed}")
    args.train_threads = check_train_threads(args.train_threads)


def cmd_train(args) -> int:
    from prunetune.config import SearchConfig
    from prunetune.data import create_dataset
    from prunetune.models import get_base_model, resolve_device, save_checkpoint
    from prunetune.search.objective import base_recipe

    _check_train_flags(args)
    # the base recipe as `search` reads it (--base-epochs, --base-lr, ...): the same cached base
    cfg = SearchConfig(
        model=args.model,
        dataset=args.dataset,
        data_root=args.data_root,
        base_epochs=args.epochs,
        base_lr=args.lr,
        base_batch_size=args.batch_size,
        base_seed=args.seed,
        device=args.device,
    )
    device = resolve_device(cfg.device)
    bundle = create_dataset(cfg.dataset, data_root=cfg.data_root)
    base = get_base_model(
        cfg.model,
        bundle,
        recipe=base_recipe(cfg),
        seed=cfg.base_seed,
        log=_log,
        device=device,
        train_threads=args.train_threads,
    )
    if args.out:
        save_checkpoint(args.out, base.model, base.meta)
    m = base.meta["metrics"]
    print(
        f"{args.model} on {bundle.name}: val accuracy {m['val_accuracy']:.2%}, "
        f"test accuracy {m['test_accuracy']:.2%}"
    )
    print(f"checkpoint: {args.out or base.path}")
    return 0


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
        _log(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def cmd_search(args) -> int:
    from prunetune.search.api import search_and_report

    cfg = _config_from_args(args)
    if args.retrain_epochs and not args.export:
        raise PrunetuneError(
            "--retrain-epochs fine-tunes the model --export writes: give --export DIR too"
        )
    if args.retrain_epochs < 0:
        raise PrunetuneError(f"--retrain-epochs must be >= 0, got {args.retrain_epochs}")
    search_and_report(
        cfg, log=_log, out=print, export_dir=args.export, retrain_epochs=args.retrain_epochs
    )
    return 0


def cmd_pareto(args) -> int:
    from prunetune.search.api import pareto_report, resolve_study

    print(
        pareto_report(
            resolve_study(args.study, args.storage), storage=args.storage, fmt=args.format
        )
    )
    return 0


def cmd_sensitivity(args) -> int:
    from prunetune import sensitivity
    from prunetune.compress import inventory
    from prunetune.config import SearchConfig
    from prunetune.data import create_dataset
    from prunetune.models import get_base_model
    from prunetune.search.objective import base_recipe, build_space

    for r in args.ratios:  # checked before the base model is trained
        if not 0.0 <= r < 1.0:
            raise PrunetuneError(f"ratios must be in [0, 1), got {r}")
    if not 0.0 <= args.max_drop <= 1.0:
        raise PrunetuneError(f"--max-drop is a fraction in [0, 1], got {args.max_drop}")
    cfg = SearchConfig(
        model=args.model,
        dataset=args.dataset,
        data_root=args.data_root,
        checkpoint=args.checkpoint,
        base_epochs=args.base_epochs,
        base_lr=args.base_lr,
        base_batch_size=args.base_batch_size,
        base_seed=args.seed,
    )
    bundle = create_dataset(cfg.dataset, data_root=cfg.data_root)
    base = get_base_model(
        cfg.model,
        bundle,
        recipe=base_recipe(cfg),
        seed=cfg.base_seed,
        checkpoint=cfg.checkpoint,
        log=_log,
    )
    inv = inventory(base.model, bundle.example_input(1))
    rows = sensitivity.scan(
        base.model,
        bundle,
        [g.name for g in inv.groups],
        args.ratios,
        importance=args.importance,
        base_accuracy=base.meta["metrics"]["val_accuracy"],
    )
    if args.plot:
        sensitivity.plot(rows, Path(args.plot), title=f"{cfg.model} on {cfg.dataset}: sensitivity")
        _log(f"wrote {args.plot}")
    if args.space_out:
        space = sensitivity.narrow(build_space(cfg, inv), rows, max_drop=args.max_drop)
        Path(args.space_out).write_text(space.to_yaml())
        _log(
            f"wrote {args.space_out} (ratio ranges narrowed to accuracy drops <= {args.max_drop:.0%})"
        )
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


def cmd_ui(args) -> int:
    """Replace this process with `mlflow server` for the store (see tracking.ui_command): Ctrl-C
    and SIGTERM reach the server itself, which stops its web worker; nothing is left running."""
    from prunetune.redact import mask_url
    from prunetune.search.tracking import experiment_links, tracking_uri, ui_command

    check_ui_address(args.host, args.port)
    if not _loopback(args.host):
        _log(
            f"warning: the MLflow UI has no login: anyone who can reach {args.host}:{args.port} "
            f"can "
            "read, change and delete every run and registered model (default --host 127.0.0.1)"
        )
    argv, env = ui_command(args.tracking_uri, host=args.host, port=args.port)
    _log(
        f"MLflow UI on http://{args.host}:{args.port} (store "
        f"{mask_url(tracking_uri(args.tracking_uri))}); "
        "Ctrl-C stops it. Each study's runs and front (MLflow's model-training view):"
    )
    for line in experiment_links(args.tracking_uri, f"http://{args.host}:{args.port}"):
        _log(f"  {line}")
    os.execve(argv[0], argv, env)  # does not return


def check_ui_address(host: str, port: int) -> None:
    """Before the server starts: PrunetuneError (one line, exit 2) for a port outside 1-65535 or
    a host that is no address of this machine; EnvironmentFault (exit 1) for a port in use."""
    import socket

    if not 1 <= port <= 65535:
        raise PrunetuneError(f"--port must be in 1-65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
            probe.bind(address)
    except socket.gaierror as exc:
        raise PrunetuneError(f"--host {host!r} is not an address here ({exc.strerror})") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise EnvironmentFault(
                f"port {port} on {host} is in use (another server?): pass another --port"
            ) from None
        raise PrunetuneError(f"cannot serve on {host}:{port}: {exc.strerror}") from None


def _loopback(host: str) -> bool:
    """Whether `host` names this machine's loopback interface only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        log=_log,
    )
    print(card.summary())
    print(f"report card: {Path(args.out) / 'card.md'}")
    return 0


STUDY_HELP = "study name (default: the only study in the storage, else mnist_net-mnist5k, what `search` uses)"


def _shape_flags(q: argparse.ArgumentParser) -> None:
    """The model and input-shape flags of `info` and `space`."""
    q.add_argument("--model", default="mnist_net", help=FLAG_HELP["model"])
    q.add_argument("--dataset", help="take input shape and classes from this dataset")
    q.add_argument("--data-root", help=FLAG_HELP["data_root"])
    q.add_argument(
        "--input-size", default="1,28,28", help="C,H,W when no --dataset (default 1,28,28)"
    )
    q.add_argument("--num-classes", type=int, default=10, help="classes when no --dataset")


def _info_flags(q: argparse.ArgumentParser) -> None:
    _shape_flags(q)
    q.add_argument("--format", choices=["table", "json"], default="table")


def _train_flags(q: argparse.ArgumentParser) -> None:
    q.add_argument("--model", default="mnist_net", help=FLAG_HELP["model"])
    q.add_argument("--dataset", default="mnist5k", help=FLAG_HELP["dataset"])
    q.add_argument("--data-root", help=FLAG_HELP["data_root"])
    recipe = (
        ("epochs", int, "training epochs"),
        ("lr", float, "learning rate (Adam)"),
        ("batch_size", int, "batch size"),
        ("seed", int, "seed"),
    )
    for flag, kind, text in recipe:
        name = f"base_{flag}"  # search's flag of the same setting: one recipe, one cached base
        default = _config_default(name)
        text = _with_default(f"{text}; search's --{name.replace('_', '-')}", default)
        q.add_argument("--" + flag.replace("_", "-"), type=kind, default=default, help=text)
    q.add_argument("--device", default="auto", help=_with_default(FLAG_HELP["device"], "auto"))
    q.add_argument(
        "--train-threads", default="auto", help=_with_default(FLAG_HELP["train_threads"], "auto")
    )
    q.add_argument("--out", help="also write the checkpoint here")


def _space_flags(q: argparse.ArgumentParser) -> None:
    _shape_flags(q)
    q.add_argument("--granularity", choices=["layer", "block", "global"], default="layer")
    q.add_argument("--ratio-max", type=float, default=0.95)
    q.add_argument("--ratio-step", type=float, default=0.05)
    q.add_argument("--bits", type=_csv(int), default=[32, 8, 6, 4])
    q.add_argument("--out", help="write to this file instead of stdout")


def _search_flags(q: argparse.ArgumentParser) -> None:
    _add_config_flags(q)
    q.add_argument(
        "--export", metavar="DIR", help="after the search, export the selected model here"
    )
    q.add_argument(
        "--retrain-epochs",
        type=int,
        default=0,
        help="with --export: recovery fine-tune of the "
        "selected model on the whole training split before export (the card reports accuracy "
        "before and after; default 0)",
    )


def _pareto_flags(q: argparse.ArgumentParser) -> None:
    q.add_argument("--study", help=STUDY_HELP)
    q.add_argument("--storage", default="sqlite:///mlruns/optuna.db")
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")


def _export_flags(q: argparse.ArgumentParser) -> None:
    q.add_argument("--study", help=STUDY_HELP)
    q.add_argument("--storage", default="sqlite:///mlruns/optuna.db")
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


def _sensitivity_flags(q: argparse.ArgumentParser) -> None:
    q.add_argument("--model", default="mnist_net", help=FLAG_HELP["model"])
    q.add_argument("--dataset", default="mnist5k", help=FLAG_HELP["dataset"])
    q.add_argument("--data-root", help=FLAG_HELP["data_root"])
    q.add_argument("--checkpoint", help=FLAG_HELP["checkpoint"])
    for name, kind in (("base_epochs", int), ("base_lr", float), ("base_batch_size", int)):
        default = _config_default(name)  # search's base recipe: the same cached base
        q.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=default,
            help=_with_default(FLAG_HELP[name], default),
        )
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--ratios", type=_csv(float), default=[0.25, 0.5, 0.75, 0.9])
    q.add_argument("--importance", default="l2")
    q.add_argument("--plot", help="write a PNG of accuracy vs ratio per group")
    q.add_argument("--space-out", help="write a search space narrowed by the scan")
    q.add_argument(
        "--max-drop", type=float, default=0.1, help="accuracy drop allowed when narrowing"
    )
    q.add_argument("--format", choices=["table", "json"], default="table")


def _ui_flags(q: argparse.ArgumentParser) -> None:
    q.add_argument("--host", default="127.0.0.1")
    q.add_argument("--port", type=int, default=5000)
    q.add_argument("--tracking-uri", help=FLAG_HELP["tracking_uri"])


def _no_flags(q: argparse.ArgumentParser) -> None:
    """`models` and `datasets` take none."""


# command: (help, flags, handler), in the order `prunetune --help` lists them
COMMANDS = {
    "models": ("list the model zoo", _no_flags, cmd_models),
    "datasets": ("list the datasets", _no_flags, cmd_datasets),
    "info": ("layers, MACs, params and prunable groups of a model", _info_flags, cmd_info),
    "train": ("train a base model and save a checkpoint (cached)", _train_flags, cmd_train),
    "space": (
        "print a model's default search space as YAML (edit, then --space)",
        _space_flags,
        cmd_space,
    ),
    "search": ("run or resume a multi-objective compression search", _search_flags, cmd_search),
    "pareto": ("the Pareto front of a study", _pareto_flags, cmd_pareto),
    "export": (
        "export a trial's compressed model, verified, with a report card",
        _export_flags,
        cmd_export,
    ),
    "sensitivity": (
        "prune each group alone at several ratios (no fine-tuning)",
        _sensitivity_flags,
        cmd_sensitivity,
    ),
    "ui": ("serve the MLflow UI for ./mlruns (127.0.0.1 unless told otherwise)", _ui_flags, cmd_ui),
}


def build_parser() -> argparse.ArgumentParser:
    """The `prunetune` parser: one subcommand per COMMANDS entry, its handler in `args.fn`."""
    p = _Parser(
        prog="prunetune",
        description="Search per-layer structured pruning ratios and "
        "bit-widths of a PyTorch CNN (Optuna / Ray Tune), tracked in MLflow.",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (help_text, add_flags, handler) in COMMANDS.items():
        q = sub.add_parser(name, help=help_text)
        add_flags(q)
        q.set_defaults(fn=handler)
    return p


def _quiet_libraries() -> None:
    """Keep library chatter (MLflow's database set-up, Optuna's per-trial lines) off the screen."""
    import logging
    import warnings

    for name in ("mlflow", "alembic", "optuna", "torch_pruning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it was raised from) says the disk or a quota is full."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "database or disk is full" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _read_only(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it was raised from) says a file or database is read-only."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.EROFS:
            return True
        if "readonly database" in str(exc) or "read-only file system" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _interrupted(command: str) -> int:
    """The one line for a SIGINT / SIGTERM that stopped `command`; its exit code (128 + signal)."""
    sig = interrupts.received() or signal.SIGINT
    note = (
        " finished trials are saved. Re-run the same command to resume."
        if command == "search"
        else ""
    )
    print(f"\nprunetune: interrupted ({sig.name});{note}".rstrip(";"), file=sys.stderr)
    return 128 + int(sig)


def main(argv: list[str] | None = None) -> int:
    """Run one command. SIGINT / SIGTERM anywhere in it: one line, exit 130 / 143 (see
    prunetune.interrupts); a user error: one line, exit 2; a full disk: one line, exit 1."""
    from prunetune.alloc import passive_openmp, tune_malloc

    tune_malloc()  # before any training: glibc keeps big buffers in the heap (see prunetune.alloc)
    passive_openmp()  # before torch loads OpenMP: waiting threads sleep instead of spinning
    args = build_parser().parse_args(argv)
    watch(
        getattr(args, "storage", None),
        getattr(args, "tracking_uri", None),
        os.environ.get("MLFLOW_TRACKING_URI"),
    )  # their secrets never reach an error line
    _quiet_libraries()
    with interrupts.handle_interrupts():
        try:
            return args.fn(args)
        except PrunetuneError as exc:
            message = scrub(" ".join(str(exc).splitlines()))  # one line, no secret in it
            print(f"prunetune: error: {message}", file=sys.stderr)
            return EXIT_FAULT if isinstance(exc, EnvironmentFault) else EXIT_USER_ERROR
        except KeyboardInterrupt:
            return _interrupted(args.command)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except Exception as exc:
            if _read_only(exc):
                print(
                    "prunetune: error: a store became read-only while the command ran "
                    f"({scrub(str(exc).splitlines()[0][:200])}); finished trials are saved",
                    file=sys.stderr,
                )
                return EXIT_FAULT
            if not _disk_full(exc):
                raise
            print(
                f"prunetune: error: no space left on the disk ({type(exc).__name__}: "
                f"{scrub(str(exc).splitlines()[0][:200])}); free some space and re-run the same "
                f"command "
                "(finished trials are saved)",
                file=sys.stderr,
            )
            return EXIT_FAULT
