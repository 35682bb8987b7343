"""The search settings as command-line flags: one argparse argument group per part of the settings
(prunetune.config.parts), flags named after the flat keys (`--base-lr` for `base_lr`), parsed into
SearchSettings through the one flat-key map (SearchSettings.from_sources)."""

from __future__ import annotations

import argparse

from prunetune.config.settings import FLAT, PARTS, SearchSettings, part_defaults

# part -> the title of its argument group in `prunetune search --help`
PART_TITLES = {
    "task": "model and data",
    "base": "base model recipe (without --checkpoint: trained once, cached under this recipe)",
    "stores": "study and stores",
    "budget": "budget",
    "plan": "strategy",
    "selection": "objectives, constraints and the picked model",
    "space_spec": "search space",
    "finetune": "fine-tune of each trial",
    "measurement": "device and measurement",
    "runner": "runner (optuna or ray)",
}
LIST_TYPES = {"objectives": str, "bits": int, "importance": str, "targets": float}

FLAG_HELP = {
    "model": "model: a zoo name (see `prunetune models`), torchvision:NAME or "
    "package.module:function",
    "dataset": "dataset name (see `prunetune datasets`)",
    "data_root": "folder with the dataset's files (torchvision layouts, or class folders for "
    "imagefolder)",
    "checkpoint": "trained base model (prunetune checkpoint or a state_dict); default: train and "
    "cache one",
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
    "candidates": "targets: allocations scored by the proxy per full trial (the best one is "
    "fine-tuned)",
    "proxy_steps": "targets: fine-tune steps of the proxy that ranks candidates (0: batch norms "
    "only; "
    "default: an eighth of the brief fine-tune's steps, at least 4)",
    "screen": "search: configs screened cheaply (pruned, batch norms re-estimated, no fine-tune) "
    "per full trial, the most promising (Pareto rank) promoted; 0: no screening (experimental)",
    "parametrization": "search: ratios (one per group, independent) | allocation (one "
    "MACs-weighted level + "
    "per-group allocations around it, AMC-style: most configs land near the level's MACs)",
    "sampler": "tpe | nsga2 | nsga3 | random | gp",
    "objectives": "comma list of accuracy, flops, macs, fps, size, params",
    "min_accuracy": "constraint: validation accuracy (fraction) at least this",
    "max_flops": "constraint: FLOPs at most this (checked before fine-tuning: rejected, not "
    "trained)",
    "space": "search space YAML (from `prunetune space`); default: derived from the model",
    "granularity": "ratio per group (layer), per block, or one global ratio",
    "ratio_min": "smallest pruning ratio searched",
    "ratio_max": "largest pruning ratio searched (< 1)",
    "ratio_step": "grid step of pruning ratios",
    "round_to": "round kept channels to a multiple of this",
    "bits": "comma list of bit-width choices per layer (2..8, 32 = float)",
    "importance": "comma list of filter-importance criteria to search (l1, l2, taylor, bn_scale, "
    "random)",
    "subset": "fine-tune on this many class-balanced training images per epoch (redrawn each "
    "epoch)",
    "epochs": "fine-tune epochs per trial",
    "lr": "fine-tune learning rate (Adam) of an unpruned model (see --lr-scaling)",
    "lr_scaling": "a model that kept a fraction f < 0.25 of the base's MACs fine-tunes at "
    "lr x (0.25 / f) ** lr_scaling, at most sqrt(fine-tune steps) x and 10x lr (heavily pruned "
    "nets need larger steps); 0: --lr for every model",
    "batch_size": "fine-tune batch size",
    "distill": "weight of distillation from the base model (0 = off)",
    "device": "where base and trials train and evaluate: auto (CUDA if torch sees it), cpu, cuda "
    "or cuda:N; "
    "FPS is always measured on the CPU runtime",
    "runtime": "runtime whose FPS is measured and optimised: torch | onnxruntime | "
    "onnxruntime-int8",
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
    "select": 'the model to export/register, e.g. "max fps where accuracy>=0.97" (default: the '
    "fewest MACs "
    "within --max-drop of the base's validation accuracy, else the knee)",
    "max_drop": "the default pick: the cheapest front member whose validation accuracy is at most "
    "this far "
    "below the base's (a fraction: 0.01 = 1 point)",
}


def csv_list(kind: type):
    """An argparse type: a comma list of `kind`."""

    def parse(s: str):
        try:
            return [kind(x.strip()) for x in s.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma list of {kind.__name__}, got {s!r}"
            ) from None

    return parse


def add_settings_flags(p: argparse.ArgumentParser) -> None:
    """`--config` and one flag per flat key, in one argument group per part. Defaults are shown
    in the help but left None in the namespace: only flags the user gave override the YAML."""
    p.add_argument("--config", help="YAML file with the same keys as these flags (flags win)")
    for part in PARTS:
        group = p.add_argument_group(PART_TITLES[part])
        for key, default in part_defaults(part).items():
            _add_setting_flag(group, part, [key], default, None)


def add_part_flags(
    p: argparse.ArgumentParser, part: str, aliases: dict | None = None, skip: tuple = ()
) -> None:
    """The flags of one part with their defaults, for a command that reads no --config (build
    the part with `part_from_args`); `aliases`: flat key -> more flag names for it; `skip`: keys
    the command does not take (their defaults are used)."""
    group = p.add_argument_group(PART_TITLES[part])
    for key, default in part_defaults(part).items():
        if key not in skip:
            names = [*(aliases or {}).get(key, ()), key]  # the command's own name first
            _add_setting_flag(group, part, names, default, default)


def _add_setting_flag(group, part: str, names: list[str], shown, default) -> None:
    """The flag(s) `names` of a field of `part` (the last is its flat key, the dest), typed by
    the field's annotation (a string: see parts.py); `shown` goes into the help."""
    key = names[-1]
    hint = PARTS[part].__annotations__[FLAT[key][1]]
    flags = ["--" + n.replace("_", "-") for n in names]
    common = {"dest": key, "default": default, "help": with_default(FLAG_HELP[key], shown)}
    if hint == "bool":
        group.add_argument(*flags, action="store_true", **common)
        return
    common["metavar"] = names[0].upper()  # train's --lr LR, not --lr BASE_LR
    if key in LIST_TYPES:
        group.add_argument(*flags, type=csv_list(LIST_TYPES[key]), **common)
    else:
        # a field of several types (train_threads: int | str) is a string its check parses
        types = [t for t in hint.split(" | ") if t != "None"]
        kind = {"int": int, "float": float}.get(types[0], str) if len(types) == 1 else str
        group.add_argument(*flags, type=kind, **common)


def part_from_args(args: argparse.Namespace, part: str):
    """The part `part` of the settings built from its flags (see add_part_flags); a key the
    command does not take keeps its default."""
    values = {k: getattr(args, k, v) for k, v in part_defaults(part).items()}
    return PARTS[part](**{FLAT[k][1]: v for k, v in values.items()})


def settings_from_args(args: argparse.Namespace) -> SearchSettings:
    """Defaults < the --config file < the flags given."""
    return SearchSettings.from_sources(
        args.config, {k: v for k, v in vars(args).items() if k in FLAT}
    )


def setting_default(key: str) -> object:
    """The default of flat key `key` (nothing built: --help imports no torch)."""
    return part_defaults(FLAT[key][0])[key]


def with_default(text: str, value) -> str:
    """A flag's help with its default appended (unless it has none or the text names it)."""
    if value is None or isinstance(value, bool) or "default" in text:
        return text
    if isinstance(value, list):
        shown = ",".join(map(str, value))
    else:
        shown = f"{value:g}" if isinstance(value, float) else value
    return f"{text} (default {shown})"
