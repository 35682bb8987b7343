"""An export logged to MLflow: a run nested under the study's latest search run (metrics, params,
the model file, compressed.pt and the cards under `export/`), registered as a version of
`prunetune-STUDY` whose source is that folder. Skipped, and said so in the card, when the study
has no MLflow store or experiment or its artifacts live outside the tracking folder."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlparse

from prunetune.errors import PrunetuneError
from prunetune.export.card import CardData
from prunetune.export.files import CARD_JSON, CARD_MD, WEIGHTS_FILE
from prunetune.export.report import Card, write_card
from prunetune.redact import is_masked, mask_url
from prunetune.search.records import TrialRecord
from prunetune.stores import absolute_sqlite, sqlite_path

ARTIFACT_PATH = "export"  # folder of the export run's artifacts; the model version's source


def search_tracking_uri(given: str | None, stored: str | None) -> str | None:
    """The tracking URI an export uses: `given`, else the search's `stored` one. A stored URI is
    kept with its password masked (prunetune.redact): then $MLFLOW_TRACKING_URI or --tracking-uri
    must give the real one (PrunetuneError, one line, otherwise)."""
    if given or not is_masked(stored):
        return given or stored
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None  # tracking.requested_uri takes it
    raise PrunetuneError(
        f"the study's tracking URI is stored without its password ({stored}): "
        f"pass "
        "--tracking-uri with the credentials, or set MLFLOW_TRACKING_URI"
    )


def _latest_run(client, experiment_id: str, filter_string: str):
    runs = client.search_runs(
        [experiment_id], filter_string, order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0] if runs else None


def foreign_artifacts(uri: str, artifact_location: str) -> str | None:
    """The artifact folder of a SQLite-tracked experiment when it lies outside the database's
    folder (prunetune creates it inside): a copied study folder would still write into the
    original. None when it is inside, or not a local store."""
    location, db = urlparse(artifact_location), sqlite_path(uri)
    if db is None or location.scheme not in ("", "file"):
        return None
    folder = Path(unquote(location.path)).resolve()
    return None if folder.is_relative_to(db.resolve().parent) else str(folder)


def _where_to_log(study: str, resolved: str, shown: str):
    """(None, tracker, experiment) of the study's MLflow experiment in the store at `resolved`
    (nothing created), or (why not, None, None)."""
    from prunetune.search.tracking import MlflowTracker

    db = sqlite_path(resolved)
    if db is not None and not db.is_file():
        return f"no MLflow store at {shown}", None, None
    tracker = MlflowTracker(resolved)
    exp = tracker.client.get_experiment_by_name(study)
    if exp is None:
        return f"no MLflow experiment {study!r} in {shown}", None, None
    if foreign := foreign_artifacts(resolved, exp.artifact_location):
        why = (
            f"experiment {study!r} keeps its artifacts in {foreign}, outside the "
            f"tracking folder of {shown} (was the study folder copied or moved?)"
        )
        return why, None, None
    return None, tracker, exp


def _not_registered(card: Card, why: str, log: Callable[[str], None]) -> Card:
    log(f"not registered in MLflow: {why}")
    card = replace(card, data=card.data.with_mlflow({"registered": False, "why": why}))
    write_card(card)
    return card


def _log_figures(client, run_id: str, d: CardData) -> None:
    """The card's figures as the export run's metrics, its choices as params."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    sides = {"base": d.base, "compressed": d.compressed}
    metrics = {
        f"{side}_{k}": getattr(figures, k)
        for side, figures in sides.items()
        for k in ("test_accuracy", "macs", "params", "file_bytes", "fps", "latency_ms")
    }
    metrics |= {
        "speedup": d.speedup,
        "size_ratio": d.size_ratio,
        "max_abs_diff": d.verification.max_abs_diff,
        "top1_agreement": d.verification.top1_agreement,
    }
    params = {
        "trial": d.trial,
        "format": d.format,
        "int8": d.int8,
        "runtime": d.runtime.compressed,
        "threads": d.runtime.threads,
        "retrain_epochs": (d.retrain or {}).get("epochs", 0),
    }
    client.log_batch(
        run_id,
        metrics=[
            Metric(k, float(v), now, 0)
            for k, v in metrics.items()
            if isinstance(v, int | float) and math.isfinite(v)
        ],
        params=[Param(k, str(v)) for k, v in params.items()],
    )


def _register_export(tracker, d: CardData, rec: TrialRecord, run_id: str) -> str:
    """A new version of the study's registered model from the export run's `export/` folder,
    tagged with the format, file, runtime and measured figures; returns the version."""
    from prunetune.search.tracking.registry import register, registered_name

    name = registered_name(d.study)
    version = register(
        tracker.client,
        d.study,
        rec,
        artifact=ARTIFACT_PATH,
        run_id=run_id,
        description=f"trial {rec.number} exported as {d.file} "
        f"({d.runtime.compressed}); see card.md",
    )
    for key, value in (
        ("format", d.format),
        ("file", d.file),
        ("runtime", d.runtime.compressed),
        ("export_test_accuracy", d.compressed.test_accuracy),
        ("export_speedup", d.speedup),
    ):
        if value is not None:
            tracker.client.set_model_version_tag(
                name, version, key, f"{value:.6g}" if isinstance(value, float) else value
            )
    return version


def _registration(tracker, d: CardData, rec: TrialRecord, run, uri: str, log) -> dict:
    """The model version of this export: a new one, or the one the same trial, format and runtime
    already have (no duplicate); its provenance record."""
    from prunetune.search.tracking.registry import registered_name, version_of

    name, run_id = registered_name(d.study), run.info.run_id
    runtime = d.runtime.compressed
    version = version_of(tracker.client, d.study, rec.number, format=d.format, runtime=runtime)
    reused = version is not None
    if reused:
        log(
            f"trial {rec.number} ({d.format}, {d.runtime.compressed}) is already {name} version "
            f"{version}; not registered again"
        )
        source = tracker.client.get_model_version(name, version).source
    else:
        version = _register_export(tracker, d, rec, run_id)
        source = f"{run.info.artifact_uri}/{ARTIFACT_PATH}"
    return {
        "registered": True,
        **({"reused_version": True} if reused else {}),
        "tracking_uri": uri,
        "experiment_id": run.info.experiment_id,
        "export_run_id": run_id,
        "artifact": ARTIFACT_PATH,
        "registered_model": name,
        "version": int(version),
        "source": source,
    }


def _create_run(client, experiment_id: str, d: CardData, rec: TrialRecord, parent):
    """The export's MLflow run, nested under the search run `parent` (when there is one)."""
    tags = {
        "prunetune.role": "export",
        "trial": str(rec.number),
        "format": d.format,
        "int8": str(d.int8),
    }
    if parent is not None:
        tags["mlflow.parentRunId"] = parent.info.run_id
    return client.create_run(
        experiment_id,
        tags=tags,
        run_name=f"export trial {rec.number} ({d.format}{' int8' if d.int8 else ''})",
    )


def log_export(card: Card, rec: TrialRecord, uri: str | None, log: Callable[[str], None]) -> Card:
    """Log the export as an MLflow run nested under the study's latest search run, register its
    `export/` folder as a version of `prunetune-STUDY`, and write the cards. Returns the card with
    its MLflow provenance."""
    from prunetune.search.tracking import requested_uri

    resolved = absolute_sqlite(requested_uri(uri))  # nothing created here (see _where_to_log)
    shown = mask_url(resolved)  # what the card, the log and the registry may hold
    why, tracker, exp = _where_to_log(card.data.study, resolved, shown)
    if why:
        return _not_registered(card, why, log)
    client, role = tracker.client, "tags.`prunetune.role`"
    parent = _latest_run(client, exp.experiment_id, f"{role} = 'search'")
    trial_run = _latest_run(
        client, exp.experiment_id, f"{role} = 'trial' and tags.trial = '{rec.number}'"
    )
    run = _create_run(client, exp.experiment_id, card.data, rec, parent)
    run_id = run.info.run_id
    try:
        _log_figures(client, run_id, card.data)
        record = _registration(tracker, card.data, rec, run, shown, log)
        record |= {
            "search_run_id": parent.info.run_id if parent else None,
            "trial_run_id": trial_run.info.run_id if trial_run else None,
        }
        card = replace(card, data=card.data.with_mlflow(record))
        write_card(card)
        for f in dict.fromkeys((card.model_path.name, WEIGHTS_FILE, CARD_JSON, CARD_MD)):
            client.log_artifact(run_id, str(card.directory / f), artifact_path=ARTIFACT_PATH)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    if not record.get("reused_version"):
        name, version = record["registered_model"], record["version"]
        log(f"registered {name} version {version} (MLflow run {run_id})")
    return card
