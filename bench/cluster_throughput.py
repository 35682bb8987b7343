"""Trials per hour on this machine: the embedded runner vs Ray on one node vs Ray on two
simulated nodes, and what a tracking server + PostgreSQL cost against local SQLite stores.

    python bench/cluster_throughput.py [--trials 8] [--repeats 2] [--out bench/results]

Every run is the real CLI (`python -m prunetune search ...`, tiny_cnn on 8x8 digits, 3 fine-tune
epochs on 1,000 images, FPS from 5 samples) in a fresh folder, configurations interleaved within
each repeat so they share the machine's noise. Services are the real programs the tests use
(tests/services.py): a private PostgreSQL on 127.0.0.1, `mlflow server --serve-artifacts` on it,
and a two-node Ray cluster (`ray start`, one CPU per node, separate working and temp folders).

- `optuna`          embedded runner, one torch thread, SQLite study + SQLite MLflow store;
- `optuna-server`   the same with `--storage postgresql://...` and `--tracking-uri http://...`;
- `ray-1node`       `--backend ray --workers 2` on a private local Ray (this machine's 2 CPUs);
- `ray-2nodes`      `--backend ray --workers 2 --address HEAD` on the two simulated nodes.

Trials per hour = trials / trial phase (first trial asked to last told, from the study);
`tracking_share` is what the parent MLflow run logs about its own cost. Two cores cannot show
what several machines give: the two "nodes" share the same two cores, so this measures the
overhead of the cluster path (object store transfers of weights, remote tracking, database
round trips), not a speed-up. Writes cluster_throughput.md / .json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

sys.path.insert(0, str(_common.REPO))
from tests.services import mlflow_server, postgres_server, ray_two_nodes  # noqa: E402

SETTINGS = [
    "--model",
    "tiny_cnn",
    "--dataset",
    "digits",
    "--base-epochs",
    "2",
    "--epochs",
    "3",
    "--subset",
    "1000",
    "--fps-repeats",
    "5",
    "--threads",
    "1",
    "--seed",
    "0",
    "--objectives",
    "accuracy,flops",
]
CONFIGS = ("optuna", "optuna-server", "ray-1node", "ray-2nodes")
ENV = {"RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1", **_common.MALLOC_ENV}


def flags(name: str, services: dict, study: str) -> list[str]:
    remote = [
        "--storage",
        f"{services['pg']}/{study.replace('-', '_')}",
        "--tracking-uri",
        services["mlflow"],
    ]
    return {
        "optuna": [],
        "optuna-server": remote,
        "ray-1node": ["--backend", "ray", "--workers", "2"],
        "ray-2nodes": ["--backend", "ray", "--workers", "2", "--address", services["ray"], *remote],
    }[name]


def study_trials(name: str, services: dict, study: str, cwd: Path) -> list:
    import optuna

    url = (
        f"{services['pg']}/{study.replace('-', '_')}"
        if name in ("optuna-server", "ray-2nodes")
        else f"sqlite:///{cwd / 'mlruns' / 'optuna.db'}"
    )
    return [
        t
        for t in optuna.load_study(study_name=study, storage=url).trials
        if t.state == optuna.trial.TrialState.COMPLETE
    ]


def tracking_share(name: str, services: dict, study: str, cwd: Path) -> float | None:
    from mlflow.tracking import MlflowClient

    uri = (
        services["mlflow"]
        if name in ("optuna-server", "ray-2nodes")
        else f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}"
    )
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(study)
    runs = (
        client.search_runs([exp.experiment_id], "tags.`prunetune.role` = 'search'") if exp else []
    )
    shares = [r.data.metrics["tracking_share"] for r in runs if "tracking_share" in r.data.metrics]
    return shares[0] if shares else None


def run_once(name: str, rep: int, trials: int, work: Path, services: dict) -> dict:
    study = f"bench-{name}-{rep}"
    cwd = work / study
    shutil.rmtree(cwd, ignore_errors=True)
    cwd.mkdir(parents=True)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "prunetune",
            "search",
            *SETTINGS,
            "--study",
            study,
            "--trials",
            str(trials),
            *flags(name, services, study),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
        timeout=3600,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    done = study_trials(name, services, study, cwd)
    phase = (
        max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
    ).total_seconds()
    return {
        "config": name,
        "repeat": rep,
        "wall_s": wall,
        "trial_phase_s": phase,
        "load_avg_1m": load,
        "trials": len(done),
        "trials_per_hour": 3600 * len(done) / phase,
        "tracking_share": tracking_share(name, services, study, cwd),
    }


@contextlib.contextmanager
def services_up(work: Path):
    """PostgreSQL with one database per remote run, the MLflow server, the two-node Ray."""
    dbs = tuple(
        f"bench_{n.replace('-', '_')}_{r}"
        for n in ("optuna-server", "ray-2nodes")
        for r in range(1, 10)
    )
    with postgres_server(("mlflow", *dbs)) as pg:
        art = Path(tempfile.mkdtemp(prefix="bench-art-", dir=work))
        with mlflow_server(f"{pg}/mlflow", art) as url:
            head, node = work / "head", work / "node"
            head.mkdir(exist_ok=True)
            node.mkdir(exist_ok=True)
            with ray_two_nodes(head, node) as address:
                yield {"pg": pg, "mlflow": url, "ray": address}


def markdown(cmd: str, facts: dict, runs: list[dict]) -> str:
    rows = []
    for name in CONFIGS:
        mine = [r for r in runs if r["config"] == name]
        tph = [r["trials_per_hour"] for r in mine]
        share = [r["tracking_share"] for r in mine if r["tracking_share"] is not None]
        rows.append(
            [
                name,
                f"{statistics.median(tph):.0f} ({min(tph):.0f}-{max(tph):.0f})",
                f"{statistics.median(r['wall_s'] for r in mine):.1f}",
                f"{statistics.median(share) * 100:.1f} %" if share else "-",
            ]
        )
    base = statistics.median(r["trials_per_hour"] for r in runs if r["config"] == "optuna")
    ratios = ", ".join(
        f"{n} / optuna = "
        f"{statistics.median(r['trials_per_hour'] for r in runs if r['config'] == n) / base:.2f}"
        for n in CONFIGS[1:]
    )
    raw = [
        [
            r["repeat"],
            r["config"],
            f"{r['wall_s']:.1f}",
            f"{r['trial_phase_s']:.1f}",
            f"{r['trials_per_hour']:.0f}",
            f"{r['load_avg_1m']:.1f}",
        ]
        for r in runs
    ]
    return "\n".join(
        [
            "# Trials per hour: embedded vs Ray (1 node, 2 simulated nodes), local stores vs "
            "servers",
            "",
            f"Command: `{cmd}`",
            "",
            _common.machine_line(facts, "one torch thread per trial"),
            "",
            f"Search: `prunetune search {' '.join(SETTINGS)}`, {runs[0]['trials']} trials per run. "
            "Trials per hour over the trial phase, median (min-max) over repeats; tracking share "
            "= the parent run's own `tracking_share` (MLflow time / trial time).",
            "",
            *_common.table(["config", "trials / hour", "wall s", "tracking share"], rows),
            "",
            f"Ratios of median trials per hour: {ratios}.",
            "",
            "What 2 cores can show: the two Ray nodes share the same two cores as the driver, "
            "MLflow server and PostgreSQL, so no configuration can exceed about 2 trials in "
            "parallel and the servers take CPU from the trials. The table measures the *overhead* "
            "of the cluster path (weights through the object store, HTTP tracking, database round "
            "trips); the speed-up of real extra machines is not measurable here.",
            "",
            "## Every run",
            "",
            *_common.table(
                [
                    "repeat",
                    "config",
                    "wall s",
                    "trial phase s",
                    "trials / hour",
                    "load avg (1 min) at start",
                ],
                raw,
            ),
            "",
        ]
    )


def main() -> None:
    _common.ensure_env()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(_common.RESULTS))
    args = ap.parse_args()
    work = _common.scratch("cluster_throughput", quick=False)
    os.environ.setdefault("PRUNETUNE_HOME", str(work / "home"))
    facts = _common.machine_facts()
    runs = []
    with services_up(work) as services:
        run_once("optuna", 0, 1, work, services)  # warm-up: trains the base model, untimed
        for rep in range(1, args.repeats + 1):
            order = CONFIGS[rep % len(CONFIGS) :] + CONFIGS[: rep % len(CONFIGS)]
            for name in order:
                runs.append(run_once(name, rep, args.trials, work, services))
                print(
                    f"repeat {rep} {name}: {runs[-1]['trials_per_hour']:.0f} trials/h",
                    file=sys.stderr,
                    flush=True,
                )
    facts = _common.finish_facts(facts)
    cmd = _common.command("cluster_throughput.py", sys.argv[1:])
    _common.write(
        "cluster_throughput",
        markdown(cmd, facts, runs),
        {"command": cmd, "machine": facts, "runs": runs},
        Path(args.out),
    )


if __name__ == "__main__":
    main()
