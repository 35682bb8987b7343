"""The `prunetune` command line: the parser (one subcommand per COMMANDS entry, each a thin
wrapper in prunetune.cli's command modules) and `main`, the one place that turns user errors
(PrunetuneError) into one line on stderr and exit code 2, Ctrl-C / SIGTERM anywhere in a command
into a one-line note (exit 130 / 143) saying how to resume, and a full disk into one line (exit 1).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from prunetune import interrupts
from prunetune.cli.base_model import cmd_sensitivity, cmd_train, sensitivity_flags, train_flags
from prunetune.cli.catalog import (
    cmd_datasets,
    cmd_info,
    cmd_models,
    cmd_space,
    info_flags,
    no_flags,
    space_flags,
)
from prunetune.cli.study import (
    cmd_export,
    cmd_pareto,
    cmd_search,
    export_flags,
    pareto_flags,
    search_flags,
)
from prunetune.cli.ui import cmd_ui, ui_flags
from prunetune.errors import EnvironmentFault, PrunetuneError, disk_full, read_only
from prunetune.redact import scrub, watch

EXIT_FAULT = 1
EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


# command: (help, flags, handler), in the order `prunetune --help` lists them
COMMANDS = {
    "models": ("list the model zoo", no_flags, cmd_models),
    "datasets": ("list the datasets", no_flags, cmd_datasets),
    "info": ("layers, MACs, params and prunable groups of a model", info_flags, cmd_info),
    "train": ("train a base model and save a checkpoint (cached)", train_flags, cmd_train),
    "space": (
        "print a model's default search space as YAML (edit, then --space)",
        space_flags,
        cmd_space,
    ),
    "search": ("run or resume a multi-objective compression search", search_flags, cmd_search),
    "pareto": ("the Pareto front of a study", pareto_flags, cmd_pareto),
    "export": (
        "export a trial's compressed model, verified, with a report card",
        export_flags,
        cmd_export,
    ),
    "sensitivity": (
        "prune each group alone at several ratios (no fine-tuning)",
        sensitivity_flags,
        cmd_sensitivity,
    ),
    "ui": ("serve the MLflow UI for ./mlruns (127.0.0.1 unless told otherwise)", ui_flags, cmd_ui),
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
    try:
        with interrupts.handle_interrupts():
            return _run(args)
    except KeyboardInterrupt:  # as the handlers were restored: the command had just ended
        return _interrupted(args.command)


def _run(args: argparse.Namespace) -> int:
    """`args.fn(args)` with what it may raise turned into one line and an exit code. A signal
    whose KeyboardInterrupt a `__del__` or weakref callback swallowed still ends the command as
    interrupted (see prunetune.interrupts)."""
    try:
        rc = args.fn(args)
        return _interrupted(args.command) if interrupts.received() is not None else rc
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
        if read_only(exc):
            print(
                "prunetune: error: a store became read-only while the command ran "
                f"({scrub(str(exc).splitlines()[0][:200])}); finished trials are saved",
                file=sys.stderr,
            )
            return EXIT_FAULT
        if not disk_full(exc):
            raise
        print(
            f"prunetune: error: no space left on the disk ({type(exc).__name__}: "
            f"{scrub(str(exc).splitlines()[0][:200])}); free some space and re-run the same "
            f"command "
            "(finished trials are saved)",
            file=sys.stderr,
        )
        return EXIT_FAULT
