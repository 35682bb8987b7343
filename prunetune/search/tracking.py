"""MLflow tracking: one experiment per study, one parent run per study (resumes reopen it), one
nested child run per trial; the Pareto front as the parent's artifacts and as `pareto` tags on children.

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
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from prunetune import interrupts
from prunetune.errors import PrunetuneError
from prunetune.redact import mask_config, mask_url, scrub
from prunetune.stores import check_kind, check_scheme, scheme
from prunetune.search.records import COMPLETE, FAILED, METRIC_KEYS, REJECTED, TrialRecord
from prunetune.search.results import SearchResult

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"
# the UI opens prunetune experiments in its "Model training" view (runs table), not the GenAI one
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
PARENT_ATTR = "mlflow_parent_run_id"  # Optuna study user attr: the study's one MLflow parent run
LOGGED_STATES = (COMPLETE, FAILED, REJECTED)  # finished trials: each has one child run


def requested_uri(uri: str | None) -> str:
    """The tracking URI asked for: `uri`, else $MLFLOW_TRACKING_URI, else DEFAULT_URI (nothing
    resolved, checked or created)."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def tracking_uri(uri: str | None) -> str:
    """The tracking URI to use: `uri`, else $MLFLOW_TRACKING_URI, else DEFAULT_URI. A SQLite URI is
    made absolute and its folder created; PrunetuneError if the folder cannot be created or written."""
    uri = requested_uri(uri)
    if uri.startswith(
        "sqlite:///"
    ):  # made absolute: MLflow caches stores by URI, Ray workers chdir
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
        folder = Path(uri.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PrunetuneError(
                f"cannot create tracking folder {str(folder)!r}: {exc.strerror}"
            ) from None
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
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION is set. The store URI is passed in the environment
    (MLFLOW_BACKEND_STORE_URI), never on the command line, which every user of the machine can
    read. PrunetuneError if a SQLite store does not exist.
    """
    import sys

    uri = requested_uri(uri)
    check_scheme(uri, "mlflow")
    argv = [sys.executable, "-m", "mlflow", "server"]
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///")).resolve()
        if not db.is_file():
            raise PrunetuneError(
                f"no MLflow store at {str(db)!r}: run `prunetune search` first, "
                "or pass --tracking-uri"
            )
        check_kind(f"sqlite:///{db}", "mlflow")  # the server would migrate any database into one
        argv += ["--artifacts-destination", str(db.parent / "artifacts")]
    argv += ["--host", host, "--port", str(port), "--workers", "1"]
    # the store URI (a password, maybe) goes by environment: argv is readable by every user (ps)
    env = {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": tracking_uri(uri),
    }
    return argv, env


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


REACH_TIMEOUT_S = 5.0
NO_SPACE = "no space left on the disk"


def check_store(uri: str | None) -> None:
    """Check the tracking store at `uri` (default as in `tracking_uri`) before a search writes
    anything, writing nothing: an http(s) server must answer within REACH_TIMEOUT_S; an existing
    SQLite store must be a complete MLflow database, and its folder writable. PrunetuneError, one
    line, otherwise."""
    from prunetune.paths import absolute_sqlite, prepare_sqlite

    uri = absolute_sqlite(requested_uri(uri))
    check_scheme(uri, "mlflow")  # no file: store, no in-memory database
    if uri.startswith(("http://", "https://")):
        check_reachable(uri)
    elif uri.startswith("sqlite:///"):
        prepare_sqlite(uri, "tracking", create=False)  # a writable folder, a SQLite file if any
        check_kind(uri, "mlflow")  # not Optuna's database, nor another application's
        _is_store(Path(uri.removeprefix("sqlite:///")))  # raises for a half-made one
    elif scheme(uri) != "databricks":
        check_kind(uri, "mlflow")  # a database server: reachable, and an MLflow database


def prepare_store(uri: str | None) -> str:
    """The tracking URI (see `tracking_uri`) with its store checked (`check_store`) and ready: a
    missing SQLite store is created completely or not at all (`_create_sqlite_store`), by one
    process at a time. PrunetuneError, one line, otherwise (OSError ENOSPC for a full disk)."""
    check_store(uri)
    uri = tracking_uri(uri)
    if uri.startswith("sqlite:///"):
        from prunetune.paths import file_lock

        db = Path(uri.removeprefix("sqlite:///"))
        if not _is_store(db):
            with file_lock(f"{hashlib.sha256(uri.encode()).hexdigest()[:24]}.mlflow-store"):
                if not _is_store(db):
                    _create_sqlite_store(db)
        _use_wal(db)
    return uri


def check_reachable(uri: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """PrunetuneError unless the tracking server at `uri` answers HTTP (any status) within
    `timeout` seconds."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(_health_request(uri), timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise PrunetuneError(
            f"MLflow tracking server {mask_url(uri)} is not reachable "
            f"({scrub(str(reason), uri)}); start it or "
            "pass another --tracking-uri"
        ) from None


def _health_request(uri: str):
    """The request for the server's /health page; credentials in the URL (user:password@) sent as
    HTTP basic authentication, as MLflow's client sends them (urllib would take them for a host)."""
    import base64
    import urllib.request
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    url = parts._replace(netloc=host, query="", fragment="").geturl().rstrip("/") + "/health"
    request = urllib.request.Request(url)
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    return request


def _is_store(db: Path) -> bool:
    """Whether `db` is a complete MLflow store (PrunetuneError for a half-made one); False when it
    is missing or empty."""
    import sqlite3

    if not db.is_file() or db.stat().st_size == 0:
        return False
    try:
        con = sqlite3.connect(db, timeout=30)  # an existing file: opening it writes nothing
        try:
            tables = {
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise PrunetuneError(f"MLflow store {str(db)!r} cannot be read: {exc}") from None
    if "alembic_version" not in tables or any(t.startswith("_alembic_tmp_") for t in tables):
        raise PrunetuneError(
            f"MLflow store {str(db)!r} is incomplete (its creation was cut short): "
            "move it away and re-run to create a new one"
        )
    return True


def _create_sqlite_store(db: Path) -> None:
    """Create the MLflow SQLite store `db` (tables, migrations, default experiment) in a temporary
    file beside it, then move that into place: a crash or a full disk leaves no half-made store.
    OSError (ENOSPC) when the disk is full, PrunetuneError (one line) for other failures."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # MLflow announces at INFO that it creates a new store's tables: not news for the user
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    tmp = db.with_name(f".{db.name}.creating-{os.getpid()}")
    tmp_uri = f"sqlite:///{tmp}"
    try:
        tmp.touch(exist_ok=False)  # an unwritable folder fails here, not in MLflow's retries
        # MLflow keeps an engine per URI for the process; without a pool (its documented setting)
        # that engine holds no connection to the temporary file once the store is made, also
        # after a failure (an open connection would hold the deleted file's space)
        with _environ(MLFLOW_SQLALCHEMYSTORE_POOLCLASS="NullPool"):
            SqlAlchemyStore(tmp_uri, (db.parent / "artifacts").as_uri()).engine.dispose()
        os.replace(tmp, db)
    except Exception as exc:
        why = _first_line(exc)
        if why == NO_SPACE:  # a fault, not the user's input: exit 1 (see cli.main)
            raise OSError(errno.ENOSPC, f"while creating the MLflow store {str(db)!r}") from None
        raise PrunetuneError(f"cannot create the MLflow store {str(db)!r}: {why}") from None
    finally:
        for leftover in (tmp, *(tmp.with_name(tmp.name + x) for x in ("-journal", "-wal", "-shm"))):
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def _environ(**values: str):
    """Environment variables set to `values` inside the block, restored after it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _first_line(exc: BaseException) -> str:
    """The root cause of `exc` in one short line (a full disk named as such)."""
    while exc.__cause__ or exc.__context__:
        exc = exc.__cause__ or exc.__context__
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "disk is full" in text:
        return NO_SPACE
    return text[:200]


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


def experiment_url(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI link that opens an experiment's front (its runs table filtered to
    `tags.pareto = 'true'`), or one run, in the model-training view: MLflow 3.x opens experiments
    in its GenAI view unless the URL says workflowType."""
    from urllib.parse import quote

    if run_id:
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
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
                self._log_batch(
                    self.parent_run_id, tags={"prunetune.worker": worker_id(), **run_tags}
                )
            params = _flat_params("", mask_config(cfg.to_stored())) | _flat_params(
                "space.", setup.space.summary()
            )
            params = {k: v for k, v in params.items() if k not in known and k != "trials"}
            base = {
                f"base_{k}": v for k, v in setup.base_metrics.items() if isinstance(v, int | float)
            }
            self._log_batch(
                self.parent_run_id,
                params=params,
                metrics=_metrics(base | {"budget": cfg.budget.trials}),
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
        self._log_batch(self.parent_run_id, metrics=_metrics(cost), tags={"outcome": outcome})
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
        location = None
        if self.uri.startswith("sqlite:///"):
            location = (
                Path(self.uri.removeprefix("sqlite:///")).parent.resolve() / "artifacts" / name
            ).as_uri()
        try:
            return self.client.create_experiment(
                name, artifact_location=location, tags={"prunetune.study": name, **EXPERIMENT_KIND}
            )
        except Exception:  # created meanwhile by a parallel search
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def _log_batch(
        self,
        run_id: str,
        *,
        params: dict[str, str] | None = None,
        metrics: list | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
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
        self._log_batch(rid, params=params, metrics=_metrics(values) + _metrics_steps(curve))
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

    def refresh_front(
        self,
        result: SearchResult,
        *,
        finished: bool = True,
        times: dict[int, tuple[int, int]] | None = None,
    ) -> None:
        """Bring the experiment up to date with `result` (the study's current state): a child run for
        every finished trial that has none, the `pareto` tag of every child run (all invocations),
        test accuracy on front children; on the parent run pareto_front.csv/.json/.png/.html, the
        hypervolume series, front_size, the front's weights under front_models/, and the selected
        model under selected/trial-NNNNN/ (registered as a model version when `finished` and no
        version of that trial exists yet); `times`: trial number -> (start, end) ms for backfilled
        children."""
        from prunetune.search import plots
        from prunetune.search.results import write_front

        children = self._children()
        logged = {int(run.data.tags.get("trial", -1)) for run in children}
        missing = [r for r in result.records if r.state in LOGGED_STATES and r.number not in logged]
        for r in missing:
            self.log_trial(r, times=(times or {}).get(r.number))
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
            test = (
                {"test_accuracy": result.test_accuracy[n]}
                if run is latest[n]
                and n in result.test_accuracy
                and "test_accuracy" not in run.data.metrics
                else {}
            )
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
        if result.front:
            self.client.log_table(
                pid, data=front_table(result), artifact_file="pareto_front_table.json"
            )
        for r in result.front_records():
            if r.weights and Path(r.weights).is_file():
                self.client.log_artifact(pid, r.weights, artifact_path="front_models")
        chosen = self._chosen(result)
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
        self._log_batch(pid, metrics=_metrics_steps(hv) + _metrics(counts), tags=tags)
        if finished and self.registers and chosen is not None:
            self._register_selection(result.study_name, chosen)

    def _register_selection(self, study: str, chosen: TrialRecord) -> None:
        """Log the selected trial's weights under selected/trial-NNNNN/ of the parent run and
        register that folder, unless a version of that trial exists already."""
        if not (chosen.weights and Path(chosen.weights).is_file()) or self.version_of(
            study, chosen.number
        ):
            return
        pid = self.parent_run_id
        # a folder, not the bare file: `models:/NAME/VERSION` resolves to a directory
        artifact = f"selected/trial-{chosen.number:05d}"
        self.client.log_artifact(pid, chosen.weights, artifact_path=artifact)
        self.client.log_dict(
            pid,
            {
                "study": study,
                "trial": chosen.number,
                "file": Path(chosen.weights).name,
                "metrics": chosen.metrics,
                "config": chosen.config,
                "load": "prunetune.compress.load_compressed_file(file)",
            },
            f"{artifact}/model.json",
        )
        version = self.register(study, chosen, artifact=artifact)
        self.client.set_model_version_tag(registered_name(study), version, "format", "prunetune")

    def version_of(self, study: str, trial: int, **tags: str) -> str | None:
        """The oldest model version of `registered_name(study)` that holds trial `trial` and has
        the given tags (e.g. format="onnx"), or None."""
        versions = self.client.search_model_versions(f"name = '{registered_name(study)}'")
        hits = [
            v
            for v in versions
            if v.tags.get("trial") == str(trial)
            and all(v.tags.get(k) == val for k, val in tags.items())
        ]
        return min(hits, key=lambda v: int(v.version)).version if hits else None

    def _chosen(self, result: SearchResult) -> TrialRecord | None:
        """The front member --select picks, else the knee; None for an empty front or a rule that
        picks nothing."""
        from prunetune.search.results import selected

        try:
            return selected(result, self.select)
        except PrunetuneError:  # a rule no front member meets selects nothing (the search warns)
            return None

    def register(
        self,
        study: str,
        record: TrialRecord,
        *,
        artifact: str,
        run_id: str | None = None,
        description: str = "",
    ) -> str:
        """Register a version of `registered_name(study)` whose source is the artifact folder
        `artifact` of run `run_id` (default: this search's parent run), with the trial number and
        metrics as tags; returns the version."""
        name = registered_name(study)
        run_id = run_id or self.parent_run_id
        try:
            self.client.get_registered_model(name)
        except Exception:
            self.client.create_registered_model(
                name, description=f"prunetune winners of study {study}"
            )
        src = f"{self.client.get_run(run_id).info.artifact_uri}/{artifact}"
        tags = {"trial": str(record.number)} | {
            k: f"{v:.6g}" for k, v in record.metrics.items() if isinstance(v, int | float)
        }
        mv = self.client.create_model_version(
            name,
            src,
            run_id=run_id,
            tags=tags,
            description=description or f"trial {record.number} of {study}",
        )
        return mv.version


def fetch_front_weights(uri: str | None, study: str, filename: str, directory: Path) -> Path | None:
    """The trial weights file `filename` from the newest search run of `study` that logged it
    under front_models/ (through a tracking server if `uri` names one), downloaded into
    `directory`; None when no run of the study holds it. Lets export and reloads work on a
    machine that does not have the search's mlruns folder (no shared filesystem)."""
    from mlflow.tracking import MlflowClient

    uri = requested_uri(uri)
    if uri.startswith(
        "sqlite:///"
    ):  # no store here: nothing to fetch, and none (no folder) is created
        db = Path(uri.removeprefix("sqlite:///")).resolve()
        if not db.is_file():
            return None
        uri = f"sqlite:///{db}"
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


def front_table(result: SearchResult) -> dict[str, list]:
    """The front as columns for mlflow.log_table (the base model first): the parent run's
    Artifacts tab shows it as a sortable table, one row per member with its trial number."""
    from prunetune.search.results import table_rows

    rows = table_rows(result)
    cols = [
        "trial",
        "accuracy",
        "test_accuracy",
        "macs",
        "flops",
        "fps",
        "speedup",
        "size_bytes",
        "knee",
        "config",
    ]
    return {c: [r.get(c) if c != "trial" else str(r.get(c)) for r in rows] for c in cols}


def front_note(result: SearchResult, run_id: str) -> str:
    """The parent run's description (Markdown, shown first on the run's Overview): the front's PNG
    (served by the tracking server's get-artifact endpoint) and its table, base model first."""
    from prunetune import render
    from prunetune.search.results import table_rows

    cols = ["trial", "accuracy", "test_accuracy", "macs", "fps", "speedup", "size_bytes", "config"]
    rows = table_rows(result)
    for row in rows:
        row["trial"] = f"{row['trial']}*" if row.get("knee") else str(row["trial"])
    lines = [
        f"**Pareto front: {len(result.front)} trials** (* = knee, the default export; "
        "filter the runs with `tags.pareto = 'true'`)",
        "",
        f"![Pareto front](get-artifact?path=pareto_front.png&run_uuid={run_id})",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for row in rows:
        cells = [
            row[c] if isinstance(row.get(c), str) else render.FORMATS.get(c, str)(row.get(c))
            for c in cols
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", render.FPS_NOTE]
    if result.hypervolume:
        from prunetune.search.pareto import UNIT_HV_NOTE

        lines.append(f"Hypervolume {result.hypervolume[-1]:.3f} on [0, 1] ({UNIT_HV_NOTE}).")
    return "\n".join(lines)[:60000]
