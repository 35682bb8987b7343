"""The MLflow tracker's store housekeeping (prunetune.search.tracking.tracker), on a real store:
parent runs whose search process died on this machine are ended, others left running. (The
tracker through whole searches: tests/test_tracking.py, tests/test_first_hour.py.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import mlflow

from prunetune.search.tracking.tracker import mark_dead_parents


def test_parent_runs_of_dead_searches_on_this_machine_are_ended_as_killed(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("s")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    host = socket.gethostname()

    def parent(worker: str) -> str:
        tags = {"prunetune.role": "search", "prunetune.worker": worker}
        return client.create_run(exp, tags=tags).info.run_id

    dead = parent(f"{host}:{gone}")
    alive = parent(f"{host}:{os.getpid()}")
    elsewhere = parent(f"another-host:{gone}")
    assert mark_dead_parents(client, exp) == [dead]
    assert client.get_run(dead).info.status == "KILLED"
    assert client.get_run(dead).data.tags["outcome"] == "died"
    assert {client.get_run(r).info.status for r in (alive, elsewhere)} == {"RUNNING"}
