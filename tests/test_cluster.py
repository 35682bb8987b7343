"""Outgrowing one machine: a study on a real PostgreSQL server, MLflow through a real tracking
server with proxied artifacts, and a two-node Ray cluster whose worker node has its own working
and temp directory. After the search the driver's folder is deleted: `pareto` and `export` from a
fresh folder work from the database and the tracking server alone (no shared filesystem)."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import optuna
import pytest

from tests.helpers import run_cli, search_args
from tests.services import mlflow_server, pg_bin, postgres_server, ray_two_nodes

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        pg_bin() is None,
        reason="PostgreSQL server not installed (.ci/run installs Debian's postgresql)",
    ),
]


@pytest.fixture(scope="module")
def postgres():
    with postgres_server(("optuna", "mlflow", "race")) as url:
        yield url


def _trials(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def test_two_drivers_on_one_postgres_study_finish_the_budget_without_duplicates(postgres, tmp_path):
    storage = f"{postgres}/race"
    args = search_args("race", 6, "--storage", storage, "--objectives", "accuracy,flops")
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda d: run_cli(args, d, timeout=600), dirs))
    for proc in done:
        assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _trials(storage, "race")
    finished = [t for t in trials if t.state.is_finished() and not t.user_attrs.get("interrupted")]
    assert len(finished) == 6
    assert len({t.number for t in trials}) == len(trials)
    workers = {t.user_attrs.get("worker") for t in finished}
    assert len(workers) == 2, workers  # both drivers ran trials of the one study


def test_ray_cluster_without_shared_folder_then_pareto_and_export_from_elsewhere(
    postgres, tmp_path
):
    storage = f"{postgres}/optuna"
    driver, head, worker, elsewhere = (
        tmp_path / n for n in ("driver", "head", "worker", "elsewhere")
    )
    for d in (driver, head, worker, elsewhere):
        d.mkdir()
    with (
        mlflow_server(f"{postgres}/mlflow", tmp_path / "artifacts") as tracking,
        ray_two_nodes(head, worker, head_cpus=0, worker_cpus=2) as address,
    ):  # trials run on the worker
        common = ["--storage", storage, "--tracking-uri", tracking]
        args = search_args(
            "cluster",
            4,
            "--backend",
            "ray",
            "--workers",
            "2",
            "--address",
            address,
            "--objectives",
            "accuracy,flops",
            *common,
        )
        proc = run_cli(args, driver, timeout=900)
        assert proc.returncode == 0, proc.stderr[-4000:]
        trials = _trials(storage, "cluster")
        nodes = {t.user_attrs.get("ray_node") for t in trials if t.state.name == "COMPLETE"}
        assert len(nodes) == 1, (
            nodes
        )  # the worker node (the head has no CPU for trials), not the driver's
        assert not list(head.rglob("trial-*.pt")) and not list(worker.rglob("trial-*.pt"))
        shutil.rmtree(driver)  # the search's folder (and its local weights) gone

        front = run_cli(
            ["pareto", "--study", "cluster", "--storage", storage, "--format", "json"], elsewhere
        )
        assert front.returncode == 0, front.stderr[-3000:]
        assert '"trial"' in front.stdout
        exported = run_cli(
            ["export", "--study", "cluster", "--out", "out", *common], elsewhere, timeout=600
        )
        assert exported.returncode == 0, exported.stderr[-4000:]
        card = json.loads((elsewhere / "out" / "card.json").read_text())
        assert card["trial"] in {t.number for t in trials}
        assert card["verification"]["outputs_match"], card["verification"]


def test_the_budget_lock_on_postgres_is_held_in_the_database(postgres):
    """A study on PostgreSQL takes its budget lock in the database (no lock file), and two holders
    of an advisory lock exclude each other whatever machine they run on: the second waits in the
    database until the first releases it."""
    import threading

    from prunetune.search.db_lock import advisory_lock
    from prunetune.search.study import budget_lock, make_storage
    from prunetune.search.study_store import load

    url = f"{postgres}/race"
    study = load(make_storage(url), "lock-kind", directions=["minimize"])
    assert (
        budget_lock(study).func is advisory_lock.__wrapped__
    )  # the database's lock, not a file of this machine
    inside, release, second_in = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with budget_lock(study):
            inside.set()
            release.wait(60)

    def second() -> None:
        with budget_lock(load(make_storage(url), "lock-kind")):
            second_in.set()

    a = threading.Thread(target=first)
    a.start()
    assert inside.wait(60)
    b = threading.Thread(target=second)
    b.start()
    assert not second_in.wait(2.0)  # blocked while the first holds it
    with advisory_lock(url, url, "another study"):  # another key is not blocked
        pass
    release.set()
    assert second_in.wait(60)
    a.join(60)
    b.join(60)
