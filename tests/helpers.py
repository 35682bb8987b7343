"""Shared helpers for the end-to-end tests: a fast search command line and process runners."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna

FAST = ["--model", "tiny_cnn", "--dataset", "digits", "--base-epochs", "2", "--epochs", "1",
        "--subset", "200", "--fps-repeats", "3", "--threads", "1"]


def search_args(study: str, trials: int, *extra: str) -> list[str]:
    return ["search", *FAST, "--study", study, "--trials", str(trials), *extra]


def run_cli(args: list[str], cwd: Path, *, timeout: float = 300, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    """`python -m prunetune ARGS` in a fresh process (what a user runs)."""
    return subprocess.run([sys.executable, "-m", "prunetune", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def start_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "prunetune", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def load_study(cwd: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd / 'mlruns' / 'optuna.db'}")


def states(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def finished(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state.is_finished() and not t.user_attrs.get("interrupted"))
