"""The MLflow listener of a search (`MlflowTracker`): one experiment per study, one parent run per
study (resumes reopen it), one nested child run per trial; the Pareto front as the parent's
artifacts and as `pareto` tags on children (see the package docstring)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from prunetune import interrupts
from prunetune.errors import PrunetuneError
from prunetune.redact import mask_config
from prunetune.search.records import COMPLETE, FAILED, METRIC_KEYS, REJECTED, TrialRecord
from prunetune.search.results import SearchResult
from prunetune.search.tracking.batch import as_metrics, flat_params, log_batch, metric_steps
from prunetune.search.tracking.markdown import front_note, front_table
from prunetune.search.tracking.registry import register_selection
from prunetune.search.tracking.store import prepare_store, tracking_uri
from prunetune.stores import sqlite_path

# the UI opens prunetune experiments in its "Model training" view (runs table), not the GenAI one
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
PARENT_ATTR = "mlflow_parent_run_id"  # Optuna study user attr: the study's one MLflow parent run
LOGGED_STATES = (COMPLETE, FAILED, REJECTED)  # finished trials: each has one child run


def mark_dead_parents(client, experiment_id: str) -> list[str]:
    """End as KILLED, tagged outcome=died, the experiment's RUNNING parent runs whose search process
    (their `prunetune.worker` tag, host:pid) is gone from this machine (killed with SIGKILL, or
    its machine lost power); return their run ids. Runs of other machines and live processes are
    left as they are."""
    from prunetune.search.study import dead_local

    runs = client.search_runs(
        [experiment_id],
        "tags.`prunetune.role` = 'search' and attributes.status = 'RUNNING'",
        max_results=1000,
    )
    dead = [r.info.run_id for r in runs if dead_local(r.data.tags.get("prunetune.worker"))]
    for run_id in dead:
        client.set_tag(run_id, "outcome", "died")
        client.set_terminated(run_id, status="KILLED")
    return dead


def _trial_times(study) -> dict[int, tuple[int, int]]:
    """Trial number -> (start, end) in ms since the epoch, from Optuna's timestamps of the study's
    finished trials; {} without a study."""
    if study is None:
        return {}
    out = {}
    for t in study.get_trials(deepcopy=False):
        if t.datetime_start is not None and t.datetime_complete is not None:
            out[t.number] = (
                int(t.datetime_start.timestamp() * 1000),
                int(t.datetime_complete.timestamp() * 1000),
            )
    return out


class MlflowTracker:
    """A SearchListener that logs the search to MLflow (see module docstring). `seconds` adds up the
    time spent in its calls, `trial_seconds` the trials' own time (both logged on the parent run at
    the end as `tracking_s`, `trial_s` and `tracking_share`); `experiment_id` and `parent_run_id`
    are set by on_search_start. `register=False`: the search registers nothing (`search --export`
    leaves that to the export, so one trial gets one version)."""

    def __init__(
        self, uri: str | None = None, *, select: str | None = None, register: bool = True
    ) -> None:
        self._uri_arg = uri
        self.registers = register
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

            # MLflow prints "View run ... at: URL" per run with the URL's password: never
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"

            self._client = MlflowClient(tracking_uri=prepare_store(self._uri_arg))
        return self._client

    # -- listener protocol ------------------------------------------------------------------
    def on_search_start(self, setup, study) -> None:
        """The study's experiment and its parent run (reopened when the study has one in this
        store, else created and stored on the study) with the config, space and base metrics.
        Parent runs of searches whose process died are ended KILLED first (mark_dead_parents); the
        study's own parent is then reopened by this search."""
        from prunetune.search.study import worker_id

        t = time.perf_counter()
        try:
            cfg = setup.config
            self.experiment_id = self._experiment(cfg.study_name)
            mark_dead_parents(self.client, self.experiment_id)
            run_tags = {"strategy": cfg.plan.strategy, "screening": str(cfg.plan.screening).lower()}
            reopened = self._reopen_parent(study.user_attrs.get(PARENT_ATTR))
            if reopened is None:
                run = self.client.create_run(
                    self.experiment_id,
                    run_name=f"search {cfg.study_name}",
                    tags={
                        "prunetune.role": "search",
                        "study": cfg.study_name,
                        "model": cfg.task.model,
                        "dataset": cfg.task.dataset,
                        "backend": cfg.runner.backend,
                        "sampler": cfg.plan.sampler,
                        "prunetune.worker": worker_id(),
                        **run_tags,
                    },
                )
                self.parent_run_id = run.info.run_id
                study.set_user_attr(PARENT_ATTR, self.parent_run_id)
                known: dict[str, str] = {}
            else:
                self.parent_run_id, known = reopened
                log_batch(
                    self.client,
                    self.parent_run_id,
                    tags={"prunetune.worker": worker_id(), **run_tags},
                )
            params = flat_params("", mask_config(cfg.to_stored())) | flat_params(
                "space.", setup.space.summary()
            )
            params = {k: v for k, v in params.items() if k not in known and k != "trials"}
            base = {
                f"base_{k}": v for k, v in setup.base_metrics.items() if isinstance(v, int | float)
            }
            log_batch(
                self.client,
                self.parent_run_id,
                params=params,
                metrics=as_metrics(base | {"budget": cfg.budget.trials}),
                tags={"budget": str(cfg.budget.trials)},
            )
            if reopened is None:
                self.client.log_dict(self.parent_run_id, setup.space.to_dict(), "search_space.json")
        finally:
            self.seconds += time.perf_counter() - t

    def _reopen_parent(self, run_id: str | None) -> tuple[str, dict[str, str]] | None:
        """(run id, its params) of the study's stored parent run, set RUNNING again, when it exists
        in this store's experiment and is not deleted; else None."""
        if not run_id:
            return None
        try:
            run = self.client.get_run(run_id)
        except Exception:  # another store, or removed
            return None
        if run.info.experiment_id != self.experiment_id or run.info.lifecycle_stage != "active":
            return None
        self.client.update_run(run_id, status="RUNNING")
        return run_id, dict(run.data.params)

    def on_trial_end(self, record: TrialRecord, study) -> None:
        t = time.perf_counter()
        self.trial_seconds += record.timings.get("total_s", 0.0)
        try:
            self.log_trial(record)
        finally:
            self.seconds += time.perf_counter() - t

    def on_search_end(self, result: SearchResult, study, *, outcome: str) -> None:
        """Refresh the front (artifacts, tags, registry), then end the parent run with the outcome's
        status. The parent is ended even if the refresh raises: KILLED when it was interrupted,
        FAILED when it failed (a full disk); a signal during the final writes waits for them."""
        if self.parent_run_id is None:
            return
        t = time.perf_counter()
        try:
            self.refresh_front(result, finished=outcome == "finished", times=_trial_times(study))
        except BaseException as exc:  # the parent says why it ended: interrupted, or failed
            if outcome == "finished":
                outcome = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            raise
        finally:
            with interrupts.deferred():  # a signal now waits until the parent is ended
                self._end_parent(outcome, t, study)

    def _end_parent(self, outcome: str, started: float, study) -> None:
        """The parent's cost metrics (and the study's screening counts: screened configs are
        counted here, never child runs) and `outcome` tag, then its end status (FINISHED, KILLED
        for "interrupted", else FAILED)."""
        from prunetune.search.screening import screen_stats
        from prunetune.search.target_report import target_metrics

        status = {"finished": "FINISHED", "interrupted": "KILLED"}.get(outcome, "FAILED")
        spent = self.seconds + time.perf_counter() - started  # all but the two writes below
        cost = {"tracking_s": spent, "trial_s": self.trial_seconds}
        if self.trial_seconds > 0:
            cost["tracking_share"] = spent / self.trial_seconds
        cost |= screen_stats(study) or {}
        cost |= target_metrics(study)
        log_batch(
            self.client, self.parent_run_id, metrics=as_metrics(cost), tags={"outcome": outcome}
        )
        self.client.set_terminated(self.parent_run_id, status=status)
        self.seconds += time.perf_counter() - started

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
        db = sqlite_path(self.uri)
        location = None if db is None else (db.parent.resolve() / "artifacts" / name).as_uri()
        try:
            return self.client.create_experiment(
                name, artifact_location=location, tags={"prunetune.study": name, **EXPERIMENT_KIND}
            )
        except Exception:  # created meanwhile by a parallel search
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def log_trial(self, record: TrialRecord, *, times: tuple[int, int] | None = None) -> str:
        """A nested child run (under the current parent) for one finished trial: three commits.
        `times`: the trial's (start, end) in ms since the epoch; default: ending now, lasting the
        record's total_s."""
        tags = {
            "mlflow.parentRunId": self.parent_run_id,
            "trial": str(record.number),
            "state": record.state,
            "pareto": "false",
            "prunetune.role": "trial",
        }
        if record.reason:
            tags["reason"] = record.reason[:5000]
        if times is None:
            end = int(time.time() * 1000)
            times = (end - int(1000 * record.timings.get("total_s", 0.0)), end)
        run = self.client.create_run(
            self.experiment_id, run_name=f"trial {record.number}", tags=tags, start_time=times[0]
        )
        rid = run.info.run_id
        params = {f"ratio.{k}": f"{v:.4g}" for k, v in record.config.get("ratios", {}).items()}
        params |= {f"bits.{k}": str(v) for k, v in record.config.get("bits", {}).items()}
        params |= {"importance": str(record.config.get("importance")), "seed": str(record.seed)}
        params |= {k: str(v) for k, v in record.context.items() if isinstance(v, str)}
        values = {
            k: v
            for k, v in record.metrics.items()  # a Python API search's own metrics too
            if k in METRIC_KEYS or (isinstance(v, int | float) and not isinstance(v, bool))
        }
        values |= {f"time_{k}": v for k, v in record.timings.items()}
        values |= {
            k: v
            for k, v in record.context.items()  # threads chosen, load at measurement
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        curve = [("finetune_loss", v, i + 1) for i, v in enumerate(record.curve)]
        log_batch(self.client, rid, params=params, metrics=as_metrics(values) + metric_steps(curve))
        self.client.set_terminated(
            rid, status="FAILED" if record.state == FAILED else "FINISHED", end_time=times[1]
        )
        return rid

    def _children(self) -> list:
        """All trial runs of the experiment, from every invocation."""
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                "tags.`prunetune.role` = 'trial'",
                max_results=1000,
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _backfill(self, result: SearchResult, times: dict[int, tuple[int, int]]) -> list:
        """A child run for every finished trial of `result` that has none (a killed invocation's);
        all trial runs of the experiment after that."""
        children = self._children()
        logged = {int(run.data.tags.get("trial", -1)) for run in children}
        missing = [r for r in result.records if r.state in LOGGED_STATES and r.number not in logged]
        for r in missing:
            self.log_trial(r, times=times.get(r.number))
        return self._children() if missing else children

    def _tag_children(self, children: list, result: SearchResult) -> None:
        """The `pareto` tag of every child run (a trial logged twice: only its latest run counts
        as on the front) and the test accuracy of front children that lack it."""
        front = set(result.front)
        latest: dict[int, object] = {}
        for run in children:
            n = int(run.data.tags.get("trial", -1))
            if n not in latest or run.info.start_time > latest[n].info.start_time:
                latest[n] = run
        for run in children:
            n = int(run.data.tags.get("trial", -1))
            flag = "true" if n in front and run is latest[n] else "false"
            test = (
                {"test_accuracy": result.test_accuracy[n]}
                if run is latest[n]
                and n in result.test_accuracy
                and "test_accuracy" not in run.data.metrics
                else {}
            )
            if run.data.tags.get("pareto") != flag or test:
                log_batch(
                    self.client, run.info.run_id, metrics=as_metrics(test), tags={"pareto": flag}
                )

    def _log_front_files(self, result: SearchResult) -> None:
        """pareto_front.csv/.json (and .png/.html, the table, the weights under front_models/ for a
        non-empty front) on the parent run."""
        from prunetune.search import plots
        from prunetune.search.results import write_front

        pid = self.parent_run_id
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            write_front(result, d)
            if result.front:
                plots.pareto_png(result, d / "pareto_front.png")
                plots.pareto_html(result, d / "pareto_front.html")
            self.client.log_artifacts(pid, str(d))
        if result.front:
            self.client.log_table(
                pid, data=front_table(result), artifact_file="pareto_front_table.json"
            )
        for r in result.front_records():
            if r.weights and Path(r.weights).is_file():
                self.client.log_artifact(pid, r.weights, artifact_path="front_models")

    def refresh_front(
        self,
        result: SearchResult,
        *,
        finished: bool = True,
        times: dict[int, tuple[int, int]] | None = None,
    ) -> None:
        """Bring the experiment up to date with `result` (the study's current state): a child run
        for every finished trial that has none, the `pareto` tag of every child run (all
        invocations), test accuracy on front children; on the parent run
        pareto_front.csv/.json/.png/.html, the hypervolume series, front_size, the front's weights
        under front_models/, and the selected model under selected/trial-NNNNN/ (registered as a
        model version when `finished` and no version of that trial exists yet); `times`: trial
        number -> (start, end) ms for backfilled children."""
        self._tag_children(self._backfill(result, times or {}), result)
        self._log_front_files(result)
        pid, chosen = self.parent_run_id, self._chosen(result)
        tags = {
            "pareto_trials": ",".join(str(n) for n in result.front),
            "mlflow.note.content": front_note(result, pid),
        }
        if chosen is not None:
            tags["selected_trial"] = str(chosen.number)
        hv = [("hypervolume", v, i + 1) for i, v in enumerate(result.hypervolume)]
        counts = {
            "front_size": len(result.front),
            "trials_complete": result.counts().get(COMPLETE, 0),
        }
        log_batch(self.client, pid, metrics=metric_steps(hv) + as_metrics(counts), tags=tags)
        if finished and self.registers and chosen is not None:
            register_selection(self.client, pid, result.study_name, chosen)

    def _chosen(self, result: SearchResult) -> TrialRecord | None:
        """The front member --select picks, else the knee; None for an empty front or a rule that
        picks nothing."""
        from prunetune.search.results import selected

        try:
            return selected(result, self.select)
        except PrunetuneError:  # a rule no front member meets selects nothing (the search warns)
            return None
