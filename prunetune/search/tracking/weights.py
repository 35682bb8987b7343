"""Trial weights fetched from the study's MLflow runs (their front_models/ artifacts), for export
and reloads on a machine without the search's mlruns folder."""

from __future__ import annotations

from pathlib import Path

from prunetune.search.tracking.store import requested_uri
from prunetune.stores import absolute_sqlite, sqlite_path


def fetch_front_weights(uri: str | None, study: str, filename: str, directory: Path) -> Path | None:
    """The trial weights file `filename` from the newest search run of `study` that logged it
    under front_models/ (through a tracking server if `uri` names one), downloaded into
    `directory`; None when no run of the study holds it. Lets export and reloads work on a
    machine that does not have the search's mlruns folder (no shared filesystem)."""
    from mlflow.tracking import MlflowClient

    uri = requested_uri(uri)
    db = sqlite_path(uri)
    if db is not None:  # no store here: nothing to fetch, and none (no folder) is created
        if not db.is_file():
            return None
        uri = absolute_sqlite(uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(study)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        "tags.`prunetune.role` = 'search'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    for run in runs:
        names = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "front_models")}
        if filename in names:
            directory.mkdir(parents=True, exist_ok=True)
            return Path(
                client.download_artifacts(
                    run.info.run_id, f"front_models/{filename}", str(directory)
                )
            )
    return None
