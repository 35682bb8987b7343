"""MLflow tracking: one experiment per study, one parent run per search invocation, one nested
child run per trial; the Pareto front as the parent's artifacts and as `pareto` tags on children.

Default store: MLflow's SQLite store `sqlite:///mlruns/mlflow.db` with artifacts under
`mlruns/artifacts/` (absolute paths, so `prunetune ui` finds them from anywhere).
The MLflow UI filter `tags.pareto = 'true'` shows exactly the current front.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from prunetune.errors import PrunetuneError
from prunetune.search.records import COMPLETE, FAILED, TrialRecord
from prunetune.search.results import SearchResult

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"
METRIC_KEYS = ("accuracy", "test_accuracy", "macs", "flops", "bitops", "params", "size_bytes", "fps",
               "latency_ms", "fps_spread", "speedup")


def tracking_uri(uri: str | None) -> str:
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


def registered_name(study: str) -> str:
    return f"prunetune-{study}"


def _flat_params(prefix: str, d: dict) -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_params(f"{key}.", v))
        else:
            out[key] = json.dumps(v) if isinstance(v, list | tuple) else str(v)
    return {k: v[:6000] for k, v in out.items()}


class MlflowTracker:
    """A SearchListener that logs the search to MLflow (see module docstring)."""

    def __init__(self, uri: str | None = None, *, select: str | None = None) -> None:
        self._uri_arg = uri
        self._client = None
        self.select = select
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.seconds = 0.0  # time spent in tracking calls (for the overhead benchmark)

    @property
    def uri(self) -> str:
        return tracking_uri(self._uri_arg)

    @property
    def client(self):
        """The MLflow client, created on first use (so a failing search start writes nothing)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    # -- listener protocol ------------------------------------------------------------------
    def on_search_start(self, setup, study) -> None:
        t = time.perf_counter()
        cfg = setup.config
        self.experiment_id = self._experiment(cfg.study_name)
        run = self.client.create_run(self.experiment_id, run_name=f"search {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                     tags={"prunetune.role": "search", "study": cfg.study_name,
                                           "model": cfg.model, "dataset": cfg.dataset,
                                           "backend": cfg.backend, "sampler": cfg.sampler})
        self.parent_run_id = run.info.run_id
        params = _flat_params("", cfg.as_dict()) | _flat_params("space.", setup.space.summary())
        params["budget"] = str(cfg.trials)
        self._log_params(self.parent_run_id, params)
        base = {f"base_{k}": float(v) for k, v in setup.base_metrics.items()
                if isinstance(v, int | float) and v is not None}
        self._log_metrics(self.parent_run_id, base)
        self.client.log_dict(self.parent_run_id, setup.space.to_dict(), "search_space.json")
        self.seconds += time.perf_counter() - t

    def on_trial_end(self, record: TrialRecord, study) -> None:
        t = time.perf_counter()
        self.log_trial(record)
        self.seconds += time.perf_counter() - t

    def on_search_end(self, result: SearchResult, study, *, outcome: str) -> None:
        t = time.perf_counter()
        if self.parent_run_id is None:
            return
        self.refresh_front(result)
        status = {"finished": "FINISHED", "interrupted": "KILLED"}.get(outcome, "FAILED")
        self.client.set_tag(self.parent_run_id, "outcome", outcome)
        self.client.set_terminated(self.parent_run_id, status=status)
        self.seconds += time.perf_counter() - t

    # -- pieces ---------------------------------------------------------------------------------
    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):
            location = (Path(self.uri.removeprefix("sqlite:///")).parent.resolve() / "artifacts" / name).as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags={"prunetune.study": name})
        except Exception:  # created meanwhile by a parallel search
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def _log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i:i + 500])

    def log_trial(self, record: TrialRecord) -> str:
        """A nested child run for one finished trial."""
        from mlflow.entities import Metric

        tags = {"mlflow.parentRunId": self.parent_run_id, "trial": str(record.number),
                "state": record.state, "pareto": "false", "prunetune.role": "trial"}
        if record.reason:
            tags["reason"] = record.reason[:5000]
        run = self.client.create_run(self.experiment_id, run_name=f"trial {record.number}", tags=tags)
        rid = run.info.run_id
        params = {f"ratio.{k}": f"{v:.4g}" for k, v in record.config.get("ratios", {}).items()}
        params |= {f"bits.{k}": str(v) for k, v in record.config.get("bits", {}).items()}
        params |= {"importance": str(record.config.get("importance")), "seed": str(record.seed)}
        self._log_params(rid, params)
        metrics = {k: record.metrics[k] for k in METRIC_KEYS if k in record.metrics}
        metrics |= {f"time_{k}": v for k, v in record.timings.items()}
        self._log_metrics(rid, metrics)
        now = int(time.time() * 1000)
        curve = [Metric("finetune_loss", float(v), now, i + 1) for i, v in enumerate(record.curve)]
        if curve:
            self.client.log_batch(rid, metrics=curve)
        self.client.set_terminated(rid, status="FAILED" if record.state == FAILED else "FINISHED")
        return rid

    def _children(self) -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], "tags.`prunetune.role` = 'trial'",
                                           max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def refresh_front(self, result: SearchResult) -> None:
        """Tags, front artifacts, plots, hypervolume series, front models and the registered winner."""
        from prunetune.search import plots
        from prunetune.search.api import write_front

        front = set(result.front)
        latest: dict[int, object] = {}
        for run in self._children():
            n = int(run.data.tags.get("trial", -1))
            if n not in latest or run.info.start_time > latest[n].info.start_time:
                latest[n] = run
        for n, run in latest.items():
            flag = "true" if n in front else "false"
            if run.data.tags.get("pareto") != flag:
                self.client.set_tag(run.info.run_id, "pareto", flag)
            if n in result.test_accuracy and "test_accuracy" not in run.data.metrics:
                self._log_metrics(run.info.run_id, {"test_accuracy": result.test_accuracy[n]})
        pid = self.parent_run_id
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            write_front(result, d)
            if result.front:
                plots.pareto_png(result, d / "pareto_front.png")
                plots.pareto_html(result, d / "pareto_front.html")
            for f in sorted(d.iterdir()):
                self.client.log_artifact(pid, str(f))
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        hv = [Metric("hypervolume", float(v), now, i + 1) for i, v in enumerate(result.hypervolume)]
        for i in range(0, len(hv), 500):
            self.client.log_batch(pid, metrics=hv[i:i + 500])
        self._log_metrics(pid, {"front_size": len(result.front), "trials_complete": result.counts().get(COMPLETE, 0)})
        self.client.set_tag(pid, "pareto_trials", ",".join(str(n) for n in result.front))
        for r in result.front_records():
            if r.weights and Path(r.weights).is_file():
                self.client.log_artifact(pid, r.weights, artifact_path="front_models")
        chosen = self._chosen(result)
        if chosen is not None:
            self.client.set_tag(pid, "selected_trial", str(chosen.number))
            self.register(result.study_name, chosen, artifact=f"front_models/{Path(chosen.weights).name}")

    def _chosen(self, result: SearchResult) -> TrialRecord | None:
        from prunetune.search import pareto

        if not result.front:
            return None
        if self.select:
            rows = [r.metrics for r in result.front_records()]
            return result.front_records()[pareto.select(rows, pareto.parse_rule(self.select))]
        return result.record(result.knee) if result.knee is not None else None

    def register(self, study: str, record: TrialRecord, *, artifact: str, run_id: str | None = None,
                 source: str | None = None, description: str = "") -> str:
        """Register a model version (source: an artifact of the parent run) with its metrics as tags."""
        name = registered_name(study)
        run_id = run_id or self.parent_run_id
        try:
            self.client.get_registered_model(name)
        except Exception:
            self.client.create_registered_model(name, description=f"prunetune winners of study {study}")
        src = source or f"{self.client.get_run(run_id).info.artifact_uri}/{artifact}"
        tags = {"trial": str(record.number)} | {k: f"{v:.6g}" for k, v in record.metrics.items()
                                                 if isinstance(v, int | float)}
        mv = self.client.create_model_version(name, src, run_id=run_id, tags=tags,
                                              description=description or f"trial {record.number} of {study}")
        return mv.version
