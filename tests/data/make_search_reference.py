"""Record (or re-create) tests/data/search_reference.json: what a small fixed `prunetune search`
produces, trial by trial. tests/test_search_reference.py runs the same search and compares.

Why: refactors of the trial pipeline (records, objective, runners, export) must not change what a
search finds. The reference pins, per trial, its number, state, sampled params, decoded compression
config, validation accuracy, MACs and FLOPs, plus the base model's accuracy / MACs / FLOPs, the
Pareto front, the knee and the front's test accuracy, for one seed on the CPU.

When to regenerate: only when a change is *meant* to change search results (a new sampler setting,
another fine-tune recipe, a new parameter in the space, a data-split change, a torch upgrade that
changes CPU kernels), and say so in the commit message. Never to make a refactor's test pass.
Run it twice and check that the two files are identical (`cmp`): that is the determinism check.

    python tests/data/make_search_reference.py          # from the checkout's root: writes the JSON
    python tests/data/make_search_reference.py --out X  # writes elsewhere

The search runs through the CLI (`python -m prunetune search`, MLflow tracking included) in a fresh
temporary folder with its own mlruns/ and PRUNETUNE_HOME (so the base model is trained from its
seed, never read from a cache), on one CPU thread: OMP_NUM_THREADS=1 makes torch's intra-op
parallelism (and so the order of floating-point sums) the same on every machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REFERENCE = Path(__file__).with_name("search_reference.json")
ROOT = Path(__file__).resolve().parents[2]
STUDY = "reference"
# Frozen here rather than taken from tests/helpers.FAST: a change of the suite's fast args must
# not silently change what the reference means. `--strategy search`: the reference was made with
# the per-group TPE search, the default until `targets` became it (issue 22).
ARGS = [
    "search",
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
    "--device",
    "cpu",
    "--objectives",
    "accuracy,flops",
    "--sampler",
    "tpe",
    "--seed",
    "7",
    "--trials",
    "5",
    "--strategy",
    "search",
    "--study",
    STUDY,
]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_search(workdir: Path, *extra: str, timeout: float = 600) -> None:
    """`python -m prunetune ARGS EXTRA` of this checkout in `workdir` (its own mlruns/ and
    PRUNETUNE_HOME), one thread; raises RuntimeError with the CLI's stderr if it does not exit 0."""
    path = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
    )  # this checkout's prunetune
    env = {
        **os.environ,
        **ONE_THREAD,
        "PRUNETUNE_HOME": str(workdir / "home"),
        "RAY_AUTH_MODE": "disabled",
        "PYTHONPATH": path,
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "prunetune", *ARGS, *extra],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"prunetune search exited {proc.returncode}:\n{proc.stderr[-4000:]}")


def environment() -> dict:
    """What bit-for-bit equal accuracy depends on besides the code: torch's version and the CPU
    kernels it dispatches to (another instruction set sums in another order)."""
    import torch

    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def snapshot(workdir: Path) -> dict:
    """The study `STUDY` in workdir/mlruns/optuna.db, reduced to what the reference compares."""
    import optuna

    from prunetune.search.results import summarize
    from prunetune.search.study import make_storage

    storage = make_storage(f"sqlite:///{workdir / 'mlruns' / 'optuna.db'}")
    result = summarize(optuna.load_study(study_name=STUDY, storage=storage))
    trials = [
        {
            "number": r.number,
            "state": r.state,
            "params": r.params,
            "config": r.config,
            "accuracy": r.metrics.get("accuracy"),
            "macs": r.metrics.get("macs"),
            "flops": r.metrics.get("flops"),
        }
        for r in result.records
    ]
    base = {k: result.base_metrics.get(k) for k in ("accuracy", "macs", "flops")}
    return {
        "args": ARGS,
        "environment": environment(),
        "base": base,
        "trials": trials,
        "front": sorted(result.front),
        "knee": result.knee,
        "test_accuracy": {str(k): v for k, v in sorted(result.test_accuracy.items())},
    }


def make_reference() -> dict:
    """Run the reference search in a fresh temporary folder and return its snapshot."""
    with tempfile.TemporaryDirectory(prefix="prunetune-reference-") as tmp:
        run_search(Path(tmp))
        return snapshot(Path(tmp))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=REFERENCE, help=f"where to write (default {REFERENCE})"
    )
    out = parser.parse_args(argv).out
    out.write_text(json.dumps(make_reference(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # snapshot() reads the study with this checkout's prunetune
    sys.exit(main())
