"""Links to the MLflow UI: the `mlflow server` command of `prunetune ui` and the URLs that open a
study's runs table. The MLflow 3 UI picks its view (GenAI vs model training) from the
`workflowType` URL parameter or the user's stored choice, default GenAI: `experiment_url` is the
link that opens the runs table directly."""

from __future__ import annotations

import logging
import os

from prunetune.errors import PrunetuneError
from prunetune.search.tracking.store import requested_uri, tracking_uri
from prunetune.stores import check_kind, check_scheme, sqlite_path, sqlite_url


def ui_command(uri: str | None, *, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the `mlflow server` that serves the UI for the store at `uri`.

    The server binds `host` only (the UI has no authentication: `prunetune ui` defaults to
    127.0.0.1). Runs' artifacts are read by the server from their file:// locations; for a SQLite
    store `--artifacts-destination` keeps whatever is uploaded through the server (e.g. runs of an
    experiment created in the UI) next to the store instead of in ./mlartifacts of the current
    folder. MLflow's GenAI job runner (four extra processes, unused here) is off unless
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION is set. The store URI is passed in the environment
    (MLFLOW_BACKEND_STORE_URI), never on the command line, which every user of the machine can
    read. PrunetuneError if a SQLite store does not exist.
    """
    import sys

    uri = requested_uri(uri)
    check_scheme(uri, "mlflow")
    argv = [sys.executable, "-m", "mlflow", "server"]
    db = sqlite_path(uri)
    if db is not None:
        db = db.resolve()
        if not db.is_file():
            raise PrunetuneError(
                f"no MLflow store at {str(db)!r}: run `prunetune search` first, "
                "or pass --tracking-uri"
            )
        check_kind(sqlite_url(db), "mlflow")  # the server would migrate any database into one
        argv += ["--artifacts-destination", str(db.parent / "artifacts")]
    argv += ["--host", host, "--port", str(port), "--workers", "1"]
    # the store URI (a password, maybe) goes by environment: argv is readable by every user (ps)
    env = {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": tracking_uri(uri),
    }
    return argv, env


def experiment_url(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI link that opens an experiment's front (its runs table filtered to
    `tags.pareto = 'true'`), or one run, in the model-training view: MLflow 3.x opens experiments
    in its GenAI view unless the URL says workflowType."""
    from urllib.parse import quote

    if run_id:
        return (
            f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
            "?workflowType=machine_learning"
        )
    front = quote("tags.pareto = 'true'")
    return (
        f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        f"&searchFilter={front}&orderByKey=metrics.%60accuracy%60&orderByAsc=false"
    )


def experiment_links(uri: str | None, base: str) -> list[str]:
    """'NAME: URL' for every prunetune experiment of the store at `uri`, each URL opening the
    experiment's runs table in the model-training view (experiment_url); [] if none."""
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    exps = MlflowClient(tracking_uri=tracking_uri(uri)).search_experiments(
        filter_string="tags.`prunetune.study` != ''"
    )
    return [f"{e.name}: {experiment_url(base, e.experiment_id)}" for e in exps]
