"""MLflow tracking: one experiment per study, one parent run per study (resumes reopen it), one
nested child run per trial; the Pareto front as the parent's artifacts and as `pareto` tags on
children.

Default store: MLflow's SQLite store `sqlite:///mlruns/mlflow.db` with artifacts under
`mlruns/artifacts/<study>/` (the experiment's artifact_location is an absolute file:// URI, so the
`mlflow server` that `prunetune ui` starts reads them from anywhere and serves them to the UI at
`/get-artifact?path=...&run_uuid=...`; moving the mlruns folder breaks these links).

One parent run per study: its run id is stored on the Optuna study (user attr PARENT_ATTR), and a
resumed search (after Ctrl-C, a kill, or with a larger --trials) reopens that run (RUNNING again,
then FINISHED / KILLED) and adds its new children under it; a parent from an older store or a
deleted one is replaced by a new one. At the end of every invocation the parent gets the current
front's artifacts and the `pareto` tag of every child in the experiment is set from the current
front, so the MLflow UI filter `tags.pareto = 'true'` shows exactly the current front. Trials a
killed invocation finished in Optuna but never logged get their child run at the next refresh.
Child runs carry the trial's real start and end times (from Optuna's trial timestamps, else the
record's total_s ending now). The model registry gets a version only when a search finishes, and
never a second version of the same trial in the same format and runtime (a search registers the
prunetune file of its selection, `search --export` leaves that to the export; exporting a trial
again in the same format reuses its version).

The MLflow 3 UI picks its view (GenAI vs model training) from the `workflowType` URL parameter or
the user's stored choice, default GenAI; the `mlflow.experimentKind` tag is set too (older 3.x
UIs read it). `experiment_url` is the link that opens the runs table directly.

Cost: the tracker writes one child run in three commits, batches the parent's writes, and keeps
a SQLite store in write-ahead-log mode (one fsync per commit instead of several: ~8x faster small
writes here, and the UI's reads never block a search's writes). `MlflowTracker.seconds` is the time
the search spends in tracking, logged on the parent run as `tracking_s` beside the trials' own time
`trial_s` and their ratio `tracking_share`; bench/tracking_overhead.py measures it.

The package, one job per module: `store` (which store, checked and made ready), `links` (the UI
server and its URLs), `tracker` (the search listener), `batch` (MLflow entities, batched writes),
`registry` (model versions), `weights` (front weights fetched back), `markdown` (the front as the
parent run shows it).
"""

from __future__ import annotations

from prunetune.search.tracking.links import experiment_links, experiment_url, ui_command
from prunetune.search.tracking.registry import registered_name
from prunetune.search.tracking.store import (
    check_store,
    prepare_store,
    requested_uri,
    tracking_uri,
)
from prunetune.search.tracking.tracker import PARENT_ATTR, MlflowTracker, mark_dead_parents
from prunetune.search.tracking.weights import fetch_front_weights

__all__ = [
    "PARENT_ATTR",
    "MlflowTracker",
    "check_store",
    "experiment_links",
    "experiment_url",
    "fetch_front_weights",
    "mark_dead_parents",
    "prepare_store",
    "registered_name",
    "requested_uri",
    "tracking_uri",
    "ui_command",
]
