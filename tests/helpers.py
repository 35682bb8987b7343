"""Shared helpers for the end-to-end tests: a fast search command line and process runners."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import optuna

from prunetune.search.study import make_storage
from prunetune.search.study_store import load

FAST = [
    "--model",
    "tiny_cnn",
    "--dataset",
    "digits",
    "--base-epochs",
    "2",
    "--epochs",
    "1",
    "--subset",
    "200",
    "--fps-repeats",
    "3",
    "--threads",
    "1",
]


def search_args(study: str, trials: int, *extra: str) -> list[str]:
    return ["search", *FAST, "--study", study, "--trials", str(trials), *extra]


def run_cli(
    args: list[str], cwd: Path, *, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python -m prunetune ARGS` in a fresh process (what a user runs)."""
    return subprocess.run(
        [sys.executable, "-m", "prunetune", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def start_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "prunetune", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def load_study(cwd: Path, name: str) -> optuna.Study:
    """The study `name` in cwd's default storage, opened as prunetune opens it (never racing a
    search that is creating that storage)."""
    return load(make_storage(f"sqlite:///{cwd / 'mlruns' / 'optuna.db'}"), name)


def states(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def finished(study: optuna.Study) -> int:
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and not t.user_attrs.get("interrupted")
    )


def wait_for(cond: Callable[[], bool], timeout: float = 240.0, step: float = 0.2) -> bool:
    """Poll `cond` every `step` s until it holds (True) or `timeout` seconds pass (False)."""
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(step)
    return False


def race(target: Callable, arg: str, n: int, *, timeout: float = 240) -> list[str]:
    """Fork `n` processes that each run `target(arg, barrier, results)` (waiting at one barrier, so
    they start together) and return what each put in `results`."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # the children only open stores: no import cost
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(arg, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return outcomes


def open_storage_after(url: str, barrier, results) -> None:
    """In a child process: wait at `barrier`, open the Optuna storage `url` as prunetune does and
    put "ok" or the error in the `results` queue."""
    barrier.wait()
    try:
        make_storage(url)
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {exc}")
