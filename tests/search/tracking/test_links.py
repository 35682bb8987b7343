"""Links to the MLflow UI (prunetune.search.tracking.links): the `mlflow server` command of
`prunetune ui` and the URLs that open a study's runs."""

from __future__ import annotations

import os
import sys
from urllib.parse import unquote

import mlflow
import pytest

from prunetune.errors import PrunetuneError
from prunetune.search.tracking.links import experiment_links, experiment_url, ui_command


def test_the_front_link_opens_the_runs_table_filtered_to_the_front():
    url = experiment_url("http://127.0.0.1:5000/", "7")
    assert url.startswith(
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    )
    assert "searchFilter=tags.pareto = 'true'" in unquote(url)
    one = experiment_url("http://h:5000", "7", "abc")
    assert one == "http://h:5000/#/experiments/7/runs/abc?workflowType=machine_learning"


def test_the_server_gets_the_store_by_environment_never_on_the_command_line(tmp_path):
    db = tmp_path / "mlflow.db"
    with pytest.raises(PrunetuneError, match="no MLflow store at"):
        ui_command(f"sqlite:///{db}", host="127.0.0.1", port=5000)
    mlflow.MlflowClient(f"sqlite:///{db}").search_experiments()  # creates the store
    argv, env = ui_command(f"sqlite:///{db}", host="127.0.0.1", port=5001)
    assert argv[:4] == [sys.executable, "-m", "mlflow", "server"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and "5001" in argv
    assert argv[argv.index("--artifacts-destination") + 1] == str(tmp_path / "artifacts")
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith(str(db)) and str(db) not in " ".join(argv)
    assert env["PATH"] == os.environ["PATH"]


def test_only_prunetune_experiments_are_linked(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    ours = client.create_experiment("study-a", tags={"prunetune.study": "study-a"})
    client.create_experiment("someone-elses")
    assert experiment_links(uri, "http://h") == [f"study-a: {experiment_url('http://h', ours)}"]
