"""MLflow tracking: one experiment per study, one parent run per search invocation, one nested
child run per trial; the Pareto front as the parent's artifacts and as `pareto` tags on children.

Default store: MLflow's SQLite store `sqlite:///mlruns/mlflow.db` with artifacts under
`mlruns/artifacts/<study>/` (the experiment's artifact_location is an absolute file:// URI, so the
`mlflow server` that `prunetune ui` starts reads them from anywhere and serves them to the UI at
`/get-artifact?path=...&run_uuid=...`; moving the mlruns folder breaks these links).

Resuming a study (same name) adds a new parent run with new children to the same experiment; at
the end of every invocation the newest parent gets the current front's artifacts and the `pareto`
tag of every child in the experiment (earlier invocations' too) is set from the current front, so
the MLflow UI filter `tags.pareto = 'true'` shows exactly the current front. Trials a killed
invocation finished in Optuna but never logged get their child run at the next refresh.

Cost: the tracker writes one child run in three commits, batches the parent's writes, and keeps
a SQLite store in write-ahead-log mode (one fsync per commit instead of several: ~8x faster small
writes here, and the UI's reads never block a search's writes). `MlflowTracker.seconds` is the time
the search spends in tracking, logged on the parent run as `tracking_s` beside the trials' own time
`trial_s` and their ratio `tracking_share`; bench/tracking_overhead.py measures it.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

from prunetune.errors import PrunetuneError
from prunetune.search.records import COMPLETE, FAILED, REJECTED, TrialRecord
from prunetune.search.results import SearchResult

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"
# the UI opens prunetune experiments in its "Model training" view (runs table), not the GenAI one
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
LOGGED_STATES = (COMPLETE, FAILED, REJECTED)  # finished trials: each has one child run
METRIC_KEYS = ("accuracy", "test_accuracy", "macs", "flops", "bitops", "params", "size_bytes", "fps",
               "latency_ms", "fps_spread", "speedup")


def tracking_uri(uri: str | None) -> str:
    """The tracking URI to use: `uri`, else $MLFLOW_TRACKING_URI, else DEFAULT_URI. A SQLite URI is
    made absolute and its folder created; PrunetuneError if the folder cannot be created or written."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.startswith("sqlite:///"):  # made absolute: MLflow caches stores by URI, Ray workers chdir
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
        folder = Path(uri.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PrunetuneError(f"cannot create tracking folder {str(folder)!r}: {exc.strerror}") from None
        if not os.access(folder, os.W_OK):
            raise PrunetuneError(f"tracking folder {str(folder)!r} is not writable")
    return uri


def ui_command(uri: str | None, *, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the `mlflow server` that serves the UI for the store at `uri`.

    The server binds `host` only (the UI has no authentication: `prunetune ui` defaults to
    127.0.0.1). Runs' artifacts are read by the server from their file:// locations; for a SQLite
    store `--artifacts-destination` keeps whatever is uploaded through the server (e.g. runs of an
    experiment created in the UI) next to the store instead of in ./mlartifacts of the current
    folder. MLflow's GenAI job runner (four extra processes, unused here) is off unless
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION is set. PrunetuneError if a SQLite store does not exist.
    """
    import sys

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    argv = [sys.executable, "-m", "mlflow", "server"]
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///")).resolve()
        if not db.is_file():
            raise PrunetuneError(f"no MLflow store at {str(db)!r}: run `prunetune search` first, "
                                 "or pass --tracking-uri")
        argv += ["--artifacts-destination", str(db.parent / "artifacts")]
    argv += ["--backend-store-uri", tracking_uri(uri), "--host", host, "--port", str(port), "--workers", "1"]
    return argv, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}


def _use_wal(db: Path) -> None:
    """Put the SQLite file `db` (created if missing) in write-ahead-log mode; the mode is stored in
    the file, so MLflow's own connections use it. Best effort: a store another process has open in
    another mode is left as it is (switching needs the file to itself)."""
    import sqlite3

    try:
        con = sqlite3.connect(db, timeout=1.0)
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                con.execute("PRAGMA journal_mode=WAL")
        finally:
            con.close()
    except sqlite3.Error:
        pass


def registered_name(study: str) -> str:
    """The registered model that holds a study's selected models."""
    return f"prunetune-{study}"


def _flat_params(prefix: str, d: dict) -> dict[str, str]:
    """A nested dict as MLflow params: dotted keys, lists as JSON, values cut to 6000 characters."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_params(f"{key}.", v))
        else:
            out[key] = json.dumps(v) if isinstance(v, list | tuple) else str(v)
    return {k: v[:6000] for k, v in out.items()}


def _metrics(values: dict[str, float | None]) -> list:
    """mlflow Metric objects at step 0, now; None values left out."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, 0) for k, v in values.items() if v is not None]


def _metrics_steps(series: list[tuple[str, float, int]]) -> list:
    """mlflow Metric objects from (key, value, step) triples, now."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v, step in series]


class MlflowTracker:
    """A SearchListener that logs the search to MLflow (see module docstring). `seconds` adds up the
    time spent in its calls, `trial_seconds` the trials' own time (both logged on the parent run at
    the end as `tracking_s`, `trial_s` and `tracking_share`); `experiment_id` and `parent_run_id`
    are set by on_search_start."""

    def __init__(self, uri: str | None = None, *, select: str | None = None) -> None:
        self._uri_arg = uri
        self._client = None
        self.select = select
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.seconds = 0.0
        self.trial_seconds = 0.0

    @property
    def uri(self) -> str:
        return tracking_uri(self._uri_arg)

    @property
    def client(self):
        """The MLflow client, created on first use (so a failing search start writes nothing)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            # MLflow announces at INFO that it creates a new store's tables: not news for the user
            logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
            uri = self.uri
            if uri.startswith("sqlite:///"):
                _use_wal(Path(uri.removeprefix("sqlite:///")))
            self._client = MlflowClient(tracking_uri=uri)
        return self._client

    # -- listener protocol ------------------------------------------------------------------
    def on_search_start(self, setup, study) -> None:
        """The study's experiment and a new parent run with the config, space and base metrics."""
        t = time.perf_counter()
        try:
            cfg = setup.config
            self.experiment_id = self._experiment(cfg.study_name)
            run = self.client.create_run(
                self.experiment_id, run_name=f"search {time.strftime('%Y-%m-%d %H:%M:%S')}",
                tags={"prunetune.role": "search", "study": cfg.study_name, "model": cfg.model,
                      "dataset": cfg.dataset, "backend": cfg.backend, "sampler": cfg.sampler,
                      "strategy": cfg.strategy, "screening": str(cfg.screening).lower()})
            self.parent_run_id = run.info.run_id
            params = _flat_params("", cfg.as_dict()) | _flat_params("space.", setup.space.summary())
            params["budget"] = str(cfg.trials)
            base = {f"base_{k}": v for k, v in setup.base_metrics.items() if isinstance(v, int | float)}
            self._log_batch(self.parent_run_id, params=params, metrics=_metrics(base))
            self.client.log_dict(self.parent_run_id, setup.space.to_dict(), "search_space.json")
        finally:
            self.seconds += time.perf_counter() - t

    def on_trial_end(self, record: TrialRecord, study) -> None:
        t = time.perf_counter()
        self.trial_seconds += record.timings.get("total_s", 0.0)
        try:
            self.log_trial(record)
        finally:
            self.seconds += time.perf_counter() - t

    def on_search_end(self, result: SearchResult, study, *, outcome: str) -> None:
        """Refresh the front (artifacts, tags, registry), then end the parent run with the outcome's
        status; the parent is ended even if the refresh raises."""
        if self.parent_run_id is None:
            return
        t = time.perf_counter()
        try:
            self.refresh_front(result)
        finally:
            status = {"finished": "FINISHED", "interrupted": "KILLED"}.get(outcome, "FAILED")
            spent = self.seconds + time.perf_counter() - t  # all but the two writes below
            cost = {"tracking_s": spent, "trial_s": self.trial_seconds}
            if self.trial_seconds > 0:
                cost["tracking_share"] = spent / self.trial_seconds
            from prunetune.search.screening import screen_stats

            cost |= screen_stats(study) or {}  # screened configs: counted here, never child runs
            self._log_batch(self.parent_run_id, metrics=_metrics(cost), tags={"outcome": outcome})
            self.client.set_terminated(self.parent_run_id, status=status)
            self.seconds += time.perf_counter() - t

    # -- pieces ---------------------------------------------------------------------------------
    def _experiment(self, name: str) -> str:
        """The experiment of study `name` (created with an absolute file:// artifact location for a
        SQLite store), tagged so the UI shows it as a model-training experiment."""
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            for k, v in EXPERIMENT_KIND.items():
                if exp.tags.get(k) != v:
                    self.client.set_experiment_tag(exp.experiment_id, k, v)
            return exp.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):
            location = (Path(self.uri.removeprefix("sqlite:///")).parent.resolve() / "artifacts" / name).as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags={"prunetune.study": name, **EXPERIMENT_KIND})
        except Exception:  # created meanwhile by a parallel search
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def _log_batch(self, run_id: str, *, params: dict[str, str] | None = None, metrics: list | None = None,
                   tags: dict[str, str] | None = None) -> None:
        """Params, metrics (mlflow Metric objects) and tags of one run in as few commits as MLflow's
        batch limits allow (100 params, 100 tags, 1000 items in all per call)."""
        from mlflow.entities import Param, RunTag

        ps = [Param(k, v) for k, v in (params or {}).items()]
        ts = [RunTag(k, v) for k, v in (tags or {}).items()]
        ms = list(metrics or [])
        while ps or ts or ms:
            p, ps = ps[:100], ps[100:]
            tg, ts = ts[:100], ts[100:]
            room = 1000 - len(p) - len(tg)
            m, ms = ms[:room], ms[room:]
            self.client.log_batch(run_id, metrics=m, params=p, tags=tg)

    def log_trial(self, record: TrialRecord) -> str:
        """A nested child run (under the current parent) for one finished trial: three commits."""
        tags = {"mlflow.parentRunId": self.parent_run_id, "trial": str(record.number),
                "state": record.state, "pareto": "false", "prunetune.role": "trial"}
        if record.reason:
            tags["reason"] = record.reason[:5000]
        run = self.client.create_run(self.experiment_id, run_name=f"trial {record.number}", tags=tags)
        rid = run.info.run_id
        params = {f"ratio.{k}": f"{v:.4g}" for k, v in record.config.get("ratios", {}).items()}
        params |= {f"bits.{k}": str(v) for k, v in record.config.get("bits", {}).items()}
        params |= {"importance": str(record.config.get("importance")), "seed": str(record.seed)}
        values = {k: record.metrics[k] for k in METRIC_KEYS if k in record.metrics}
        values |= {f"time_{k}": v for k, v in record.timings.items()}
        curve = [("finetune_loss", v, i + 1) for i, v in enumerate(record.curve)]
        self._log_batch(rid, params=params, metrics=_metrics(values) + _metrics_steps(curve))
        self.client.set_terminated(rid, status="FAILED" if record.state == FAILED else "FINISHED")
        return rid

    def _children(self) -> list:
        """All trial runs of the experiment, from every invocation."""
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], "tags.`prunetune.role` = 'trial'",
                                           max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def refresh_front(self, result: SearchResult) -> None:
        """Bring the experiment up to date with `result` (the study's current state): a child run for
        every finished trial that has none, the `pareto` tag of every child run (all invocations),
        test accuracy on front children; on the parent run pareto_front.csv/.json/.png/.html, the
        hypervolume series, front_size, the front's weights under front_models/, and the selected
        model under selected/trial-NNNNN/ (registered as a new model version when the selection
        differs from the last one a search registered)."""
        from prunetune.search import plots
        from prunetune.search.api import write_front

        children = self._children()
        logged = {int(run.data.tags.get("trial", -1)) for run in children}
        missing = [r for r in result.records if r.state in LOGGED_STATES and r.number not in logged]
        for r in missing:
            self.log_trial(r)
        if missing:
            children = self._children()
        front = set(result.front)
        latest: dict[int, object] = {}
        for run in children:
            n = int(run.data.tags.get("trial", -1))
            if n not in latest or run.info.start_time > latest[n].info.start_time:
                latest[n] = run
        for run in children:  # a trial logged twice: only its latest run counts as on the front
            n = int(run.data.tags.get("trial", -1))
            flag = "true" if n in front and run is latest[n] else "false"
            test = ({"test_accuracy": result.test_accuracy[n]} if run is latest[n] and n in result.test_accuracy
                    and "test_accuracy" not in run.data.metrics else {})
            if run.data.tags.get("pareto") != flag or test:
                self._log_batch(run.info.run_id, metrics=_metrics(test), tags={"pareto": flag})
        pid = self.parent_run_id
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            write_front(result, d)
            if result.front:
                plots.pareto_png(result, d / "pareto_front.png")
                plots.pareto_html(result, d / "pareto_front.html")
            self.client.log_artifacts(pid, str(d))
        for r in result.front_records():
            if r.weights and Path(r.weights).is_file():
                self.client.log_artifact(pid, r.weights, artifact_path="front_models")
        chosen = self._chosen(result)
        tags = {"pareto_trials": ",".join(str(n) for n in result.front)}
        if chosen is not None:
            tags["selected_trial"] = str(chosen.number)
        hv = [("hypervolume", v, i + 1) for i, v in enumerate(result.hypervolume)]
        counts = {"front_size": len(result.front), "trials_complete": result.counts().get(COMPLETE, 0)}
        self._log_batch(pid, metrics=_metrics_steps(hv) + _metrics(counts), tags=tags)
        if (chosen is not None and chosen.weights and Path(chosen.weights).is_file()
                and self._registered_selection(result.study_name) != str(chosen.number)):
            # a folder, not the bare file: `models:/NAME/VERSION` resolves to a directory
            artifact = f"selected/trial-{chosen.number:05d}"
            self.client.log_artifact(pid, chosen.weights, artifact_path=artifact)
            self.client.log_dict(pid, {"study": result.study_name, "trial": chosen.number,
                                       "file": Path(chosen.weights).name, "metrics": chosen.metrics,
                                       "config": chosen.config,
                                       "load": "prunetune.compress.load_compressed_file(file)"},
                                 f"{artifact}/model.json")
            self.register(result.study_name, chosen, artifact=artifact)

    def _registered_selection(self, study: str) -> str | None:
        """The trial (tag) of the newest model version a search registered (source under selected/,
        not an export), or None: a resume registers only when the selection changes."""
        versions = self.client.search_model_versions(f"name = '{registered_name(study)}'")
        searched = [v for v in versions if "/selected/trial-" in v.source]
        if not searched:
            return None
        return max(searched, key=lambda v: int(v.version)).tags.get("trial")

    def _chosen(self, result: SearchResult) -> TrialRecord | None:
        """The front member --select picks, else the knee; None for an empty front."""
        from prunetune.search import pareto

        if not result.front:
            return None
        if self.select:
            rows = [r.metrics for r in result.front_records()]
            return result.front_records()[pareto.select(rows, pareto.parse_rule(self.select))]
        return result.record(result.knee) if result.knee is not None else None

    def register(self, study: str, record: TrialRecord, *, artifact: str, run_id: str | None = None,
                 description: str = "") -> str:
        """Register a version of `registered_name(study)` whose source is the artifact folder
        `artifact` of run `run_id` (default: this search's parent run), with the trial number and
        metrics as tags; returns the version."""
        name = registered_name(study)
        run_id = run_id or self.parent_run_id
        try:
            self.client.get_registered_model(name)
        except Exception:
            self.client.create_registered_model(name, description=f"prunetune winners of study {study}")
        src = f"{self.client.get_run(run_id).info.artifact_uri}/{artifact}"
        tags = {"trial": str(record.number)} | {k: f"{v:.6g}" for k, v in record.metrics.items()
                                                 if isinstance(v, int | float)}
        mv = self.client.create_model_version(name, src, run_id=run_id, tags=tags,
                                              description=description or f"trial {record.number} of {study}")
        return mv.version
