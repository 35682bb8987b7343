"""Ray Tune backend: the same trial function, Optuna (same sampler, same study storage) as Tune's
searcher, at most K trials at once on a local Ray or on a cluster (`--address`).

Call order: [join the cluster named by --address: fails fast, before anything is written] ->
prepare_search -> open_study (shared with the optuna backend) -> recover_unfinished -> [if trials
remain: start a private local Ray unless joined; check a node can hold one trial] ->
listeners.on_search_start -> Tuner(with_resources(with_parameters(trial actor, setup)),
search_alg=ConcurrencyLimiter(StudySearcher)).fit() -> finalize -> listeners.on_search_end ->
ray.shutdown(). StudySearcher is a plain `ray.tune.search.Searcher` that delegates to RayTrials
(ask / tell / interrupt on the study `open_study` returned, with its sampler).

Everything that touches the study or MLflow runs in this driver process: the searcher asks Optuna
for each trial (user attr `worker` = the driver's host:pid, so a killed driver's trials are
recovered), stores each TrialRecord exactly as the embedded runner does (`optuna_runner.tell`,
plus user attrs `ray_node` and `ray_worker`: where it ran) and calls the listeners. Ray workers only
run `run_trial`. So `prunetune pareto`, MLflow and export work unchanged, and re-running the command
continues the study: finished trials are kept, the ones in flight when it stopped (Ctrl-C, SIGTERM,
kill -9) are re-run with their original seed.

The SearchSetup (data, base model, space) is put in the object store once (tune.with_parameters)
and fetched once per trial actor; actors are reused across trials. Honest FPS under parallel
trials: a trial's compute (pruning, fine-tuning, evaluation, runner building) holds QuietLock.busy()
and its timing QuietLock.quiet() (flock(2) on files in the user's lock folder), so no timing
overlaps another trial's compute on the same machine.

No shared filesystem is needed: a trial writes its compressed weights to a temp folder of the node
it runs on, and sends them through Ray's object store to a `WeightsSink` actor pinned to the
driver's node, which stores them in the driver's mlruns/prunetune/<study>/weights (the front's
weights then go to MLflow as usual, through a tracking server if one is named). Files above
WEIGHTS_SHIP_LIMIT are not shipped: the trial keeps its metrics, its record says why it has no
weights, and export refuses it. Limits: every node needs prunetune installed (same version). Early stopping (ASHA) is deliberately absent: Tune reports stopped trials to Optuna as
complete with early values, which would pollute the Pareto front.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Callable

import optuna

from prunetune.config import SearchConfig
from prunetune.errors import PrunetuneError
from prunetune.paths import weights_dir
from prunetune.search.objective import SearchSetup, prepare_search, run_trial
from prunetune.search.objectives import get_objective
from prunetune.search.optuna_runner import (
    Deadline,
    SearchListener,
    drive,
    finish_trial,
    make_proposer,
    mark_interrupted,
    next_trial,
)
from prunetune.search.records import FAILED, FailureStreak, RepeatedFailureError, TrialRecord
from prunetune.search.results import SearchResult
from prunetune.search.study import count_finished, open_study, recover_unfinished, worker_id

NUMBER_KEY = (
    "_prunetune_trial"  # the Optuna trial number of a Ray trial (names its record and weights)
)
REPLAY_KEY = "_prunetune_replay_of"  # the trial it re-runs (whose seed it uses), or None
RECORD_KEY = "prunetune_record"  # the TrialRecord as JSON (Tune flattens nested dicts in results)
CONNECT_TIMEOUT_S = 5.0
WEIGHTS_SHIP_LIMIT = 512 * 2**20  # bytes of one trial's weights file sent back to the driver
# Ray's console output off the user's screen; Ctrl-C reaches us (Tune would swallow it); no
# Tune loggers or per-trial working directories. setdefault: the user's own settings win.
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
}
# ... and so Tune's result analysis finds no result.json files: its warning about that is noise here
SILENCED_LOGGER = "ray.tune.analysis.experiment_analysis"


def run_search_ray(
    cfg: SearchConfig,
    *,
    listeners: list[SearchListener] = (),
    log=lambda m: None,
    progress=None,
    setup: SearchSetup | None = None,
) -> SearchResult:
    """Run (or resume) the search with Ray Tune until cfg.trials trials have finished, at most
    cfg.workers at once. Raises PrunetuneError (one line) if Ray cannot be started or joined, or if
    no node of a local Ray can hold one trial. A Ray the caller started is used and left running;
    one this function started (or joined) is shut down (disconnected) before it returns. `setup`:
    one already prepared (the Python API's; its weights folder must be absolute), else prepared here."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    logging.getLogger(SILENCED_LOGGER).setLevel(logging.ERROR)

    owns_ray = not ray.is_initialized()
    try:
        if cfg.address and owns_ray:
            _init_ray(
                cfg
            )  # a wrong address fails before the base model is trained or anything written
        setup = setup or prepare_search(cfg, weights_dir=weights_dir(cfg.study_name), log=log)
        for layer, why in setup.skipped_layers:
            log(f"left unpruned: {layer} ({why})")
        study = open_study(cfg, setup.space, setup.base_metrics, log=log)
        replayed = recover_unfinished(study)
        if replayed:
            log(f"re-running {len(replayed)} trial(s) an earlier run left unfinished: {replayed}")
        finished, running = count_finished(study)
        remaining = cfg.trials - finished - running
        if remaining > 0:
            if not ray.is_initialized():
                _init_ray(cfg)
            _check_resources(cfg, remaining, log)
        return _run(cfg, setup, study, remaining, listeners, log, progress)
    finally:
        if owns_ray and ray.is_initialized():
            ray.shutdown()


def _run(
    cfg: SearchConfig,
    setup: SearchSetup,
    study: optuna.Study,
    remaining: int,
    listeners,
    log,
    progress,
) -> SearchResult:
    searcher = None

    def run_trials() -> None:
        nonlocal searcher
        if progress:
            progress(count_finished(study)[0], cfg.trials, study)
        if remaining > 0:
            searcher = _make_searcher(cfg, setup, study, listeners, log, progress)
            _fit(cfg, setup, searcher, remaining)
            if searcher.trials.stop_error is not None:
                raise searcher.trials.stop_error

    def cleanup() -> None:
        if searcher is not None:
            searcher.trials.interrupt_unfinished()

    return drive(cfg, setup, study, listeners, run_trials, cleanup, log=log)


def _check_reachable(address: str) -> None:
    """A clear error for an address nobody listens on (ray.init would retry for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise PrunetuneError(
            f"--address must be auto or HOST:PORT of a Ray head node, got {address!r}"
        )
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise PrunetuneError(
            f"no Ray cluster at {address} ({why}); start one with `ray start --head`, "
            f"or give the head node's HOST:PORT"
        ) from None


def _init_ray(cfg: SearchConfig) -> None:
    """Join the cluster at cfg.address (`auto`: RAY_ADDRESS, or the one `ray start` made on this
    machine; `ray://HOST:PORT`: Ray Client), or start a private local Ray with this machine's CPUs
    (as Ray counts them: container CPU limits respected)."""
    import ray

    if cfg.address and cfg.address != "auto":
        _check_reachable(cfg.address)
    kwargs = dict(logging_level=logging.WARNING, log_to_driver=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if cfg.address:
                ray.init(address=cfg.address, **kwargs)
            else:  # "local": never attach to a cluster that happens to run on this machine
                ray.init(address="local", include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise PrunetuneError(
            f"cannot {'join' if cfg.address else 'start'} Ray "
            f"({cfg.address or 'local'}): {str(exc).splitlines()[0][:200]}"
        ) from None


def _trainable_class():
    from ray import tune

    class PrunetuneTrial(tune.Trainable):
        """One Tune trial = one prunetune trial, run in a single step. `setup` (the SearchSetup)
        arrives once per actor from the object store; a reused actor keeps it for later trials."""

        def setup(self, config: dict, setup: SearchSetup, sink) -> None:  # noqa: ARG002 (config: see step)
            import tempfile

            # weights go to this node's temp folder first, then to the driver (see ship_weights)
            local = Path(tempfile.mkdtemp(prefix=f"prunetune-{setup.config.study_name}-"))
            self._prunetune = dataclasses.replace(
                setup, weights_dir=local, device=str(trial_device(setup.config))
            )
            self._sink = sink

        def cleanup(self) -> None:
            import shutil

            shutil.rmtree(self._prunetune.weights_dir, ignore_errors=True)

        def reset_config(self, new_config: dict) -> bool:  # noqa: ARG002 (self.config is set by Tune)
            return True

        def step(self) -> dict:
            import ray

            params = dict(self.config)
            number, replay_of = int(params.pop(NUMBER_KEY)), params.pop(REPLAY_KEY, None)
            record = run_trial(self._prunetune, params, number, replay_of=replay_of)
            ship_weights(record, self._sink)
            out: dict = {
                RECORD_KEY: json.dumps(record.as_dict()),
                "done": True,
                "node_id": ray.get_runtime_context().get_node_id(),
                "ray_worker": worker_id(),
            }
            # Tune insists the searcher's metrics are in every result; the searcher uses the record
            for o in self._prunetune.config.objectives:
                key = get_objective(o).key
                out[key] = record.metrics.get(key)
            return out

    return PrunetuneTrial


def ship_weights(record: TrialRecord, sink, limit: int = WEIGHTS_SHIP_LIMIT) -> None:
    """Move the trial's weights file (on this node) to the driver through `sink` (a WeightsSink
    actor handle) and point `record.weights` at the driver's copy. Above `limit` bytes the file
    is dropped and the record says so (the trial keeps its metrics; export refuses it)."""
    import ray

    if not record.weights:
        return
    local = Path(record.weights)
    try:
        size = local.stat().st_size
        if size > limit:
            record.weights = None
            record.reason = (
                f"weights not kept: {size / 2**20:.0f} MiB is above the {limit / 2**20:.0f} MiB "
                f"a Ray trial ships to the driver"
            )
            return
        record.weights = ray.get(sink.put.remote(local.name, local.read_bytes()))
    finally:
        local.unlink(missing_ok=True)


def _weights_sink(directory: Path):
    """A WeightsSink actor on the driver's node (no CPU reserved) that writes the files trials send
    into `directory`, atomically (temp file + rename)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    class WeightsSink:
        def __init__(self, folder: str) -> None:
            self.folder = Path(folder)
            self.folder.mkdir(parents=True, exist_ok=True)

        def put(self, name: str, data: bytes) -> str:
            path = self.folder / Path(name).name
            tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            return str(path)

    here = ray.get_runtime_context().get_node_id()
    return WeightsSink.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)
    ).remote(str(directory))


def trial_device(cfg: SearchConfig):
    """A Ray trial's device: the GPU Ray gave its actor (CUDA_VISIBLE_DEVICES) when
    --gpus-per-trial > 0, else the CPU (cfg.device agrees: SearchConfig checks it)."""
    from prunetune.models import resolve_device

    return resolve_device("cuda" if cfg.gpus_per_trial > 0 else "cpu")


class RayTrials:
    """The driver's side of a Ray search on prunetune's study: one Optuna trial per Tune trial id.

    `suggest` stops at the budget (counted with the study's budget lock, so other searches on the
    study are counted too), at the deadline, when a strategy's sweep is done or screening ran out
    of time; `complete` stores the TrialRecord (complete -> values + constraints, rejected ->
    PRUNED, failed -> FAIL with its reason) and notifies the listeners; the study in storage is
    the only checkpoint. After FAILURE_STREAK identical failures in a row it asks for no more
    trials and keeps the RepeatedFailureError in `stop_error` (raised once Tune has finished the
    trials in flight). `interrupt_unfinished` marks the trials still in flight interrupted."""

    def __init__(
        self,
        cfg: SearchConfig,
        setup: SearchSetup,
        study: optuna.Study,
        listeners: list[SearchListener],
        log: Callable[[str], None],
        progress,
    ) -> None:
        self.cfg, self.setup, self.study = cfg, setup, study
        self.listeners, self.log, self.progress = listeners, log, progress
        self.deadline = Deadline(cfg.timeout)  # starts with the searcher: this run's window
        self.screen = make_proposer(setup, study)  # runs here, in the driver
        self.asked: dict[str, optuna.trial.Trial] = {}
        self.completed: set[str] = set()
        self.streak, self.stop_error = FailureStreak(), None

    def suggest(self, trial_id: str) -> dict | None:
        """The Tune config of a new trial (its params, NUMBER_KEY, REPLAY_KEY), or None: no more
        trials start (those in flight finish)."""
        if self.stop_error is not None:
            return None
        asked = next_trial(self.study, self.setup, self.deadline, self.screen, sample=True)
        if asked is None:
            return None
        trial, params = asked
        self.asked[trial_id] = trial
        return {**params, NUMBER_KEY: trial.number, REPLAY_KEY: trial.user_attrs.get("replay_of")}

    def complete(self, trial_id: str, result: dict | None, error: bool) -> None:
        """Store the record a finished Tune trial sent (or a FAILED one: no result), notify."""
        if trial_id in self.completed:
            return
        trial = self.asked[trial_id]
        record = _record_of(trial, result, error)
        finish_trial(self.study, trial, record, self.cfg, self.listeners, self.log)
        self.completed.add(trial_id)
        if self.progress:
            self.progress(count_finished(self.study)[0], self.cfg.trials, self.study)
        try:
            self.streak.observe(record)
        except RepeatedFailureError as exc:
            self.stop_error = self.stop_error or exc

    def interrupt_unfinished(self) -> None:
        """Mark the trials still in flight as interrupted (re-run on resume), as the embedded
        runner does on Ctrl-C. A no-op after a finished search."""
        for trial_id, trial in self.asked.items():
            if trial_id not in self.completed:
                mark_interrupted(self.study, trial)
                self.completed.add(trial_id)


def _record_of(trial: optuna.trial.Trial, result: dict | None, error: bool) -> TrialRecord:
    """The TrialRecord of a finished Tune trial (where it ran tagged on `trial`), or a FAILED one
    when no record came back."""
    if result and RECORD_KEY in result:
        record = TrialRecord(**json.loads(result[RECORD_KEY]))
        trial.set_user_attr("ray_node", result.get("node_id"))
        trial.set_user_attr("ray_worker", result.get("ray_worker"))
    else:
        why = (
            "the Ray trial failed (its actor died or raised; see the Ray logs)"
            if error
            else "no result"
        )
        record = TrialRecord(
            number=trial.number, state=FAILED, params=dict(trial.params), reason=why
        )
    record.number = trial.number
    return record


def _make_searcher(
    cfg: SearchConfig, setup: SearchSetup, study: optuna.Study, listeners, log, progress
):
    """A plain Tune Searcher on the study: it hands every call to a RayTrials (its `.trials`), so
    the Optuna study, with the sampler `open_study` gave it, is the only search state."""
    from ray.tune.search import Searcher

    class StudySearcher(Searcher):
        """Tune's view of prunetune's study: suggest = RayTrials.suggest (FINISHED once it says
        no more), on_trial_complete = RayTrials.complete; no state of its own to save."""

        def __init__(self, trials: RayTrials, metric: list[str], mode: list[str]) -> None:
            super().__init__(metric=metric, mode=mode)
            self.trials = trials

        def suggest(self, trial_id: str) -> dict | str | None:
            config = self.trials.suggest(trial_id)
            return Searcher.FINISHED if config is None else config

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            self.trials.complete(trial_id, result, error)

        def save(self, checkpoint_path: str) -> None:
            """Nothing to save: the Optuna study in its storage is the checkpoint."""

        def restore(self, checkpoint_path: str) -> None:
            """Nothing to restore: a re-run resumes from the study (see recover_unfinished)."""

    objectives = [get_objective(o) for o in cfg.objectives]
    modes = ["max" if o.direction == "maximize" else "min" for o in objectives]
    return StudySearcher(
        RayTrials(cfg, setup, study, listeners, log, progress), [o.key for o in objectives], modes
    )


def _trials_fitting(node: dict, cfg: SearchConfig) -> int:
    """How many trials one node's resources hold at once."""
    counts = [
        int(node.get(key, 0.0) // need)
        for key, need in (("CPU", cfg.cpus_per_trial), ("GPU", cfg.gpus_per_trial))
        if need > 0
    ]
    return min(counts) if counts else cfg.workers


def _check_resources(cfg: SearchConfig, remaining: int, log) -> None:
    """Log what will run where; refuse trials no node of a local Ray can hold (Tune would wait
    forever). A joined cluster may grow (autoscaler): there it is a warning."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    fit = sum(_trials_fitting(n, cfg) for n in nodes)
    resources = {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
    log(
        f"ray: {remaining} trial(s), at most {cfg.workers} at once, {resources} each; cluster: "
        f"{len(nodes)} node(s), {sum(n.get('CPU', 0.0) for n in nodes):g} CPU(s)"
        + (f" (only {fit} trial(s) fit at once)" if fit < cfg.workers else "")
    )
    if fit == 0:
        msg = (
            f"no node of the Ray cluster has {cfg.cpus_per_trial:g} CPU(s) and {cfg.gpus_per_trial:g} "
            f"GPU(s) for one trial (see --cpus-per-trial, --gpus-per-trial)"
        )
        if not cfg.address:
            raise PrunetuneError(msg)
        log(f"warning: {msg}; trials wait until the cluster grows")


def _fit(cfg: SearchConfig, setup: SearchSetup, searcher, remaining: int) -> None:
    """Tune runs `remaining` trials at most (the searcher stops at the budget), cfg.workers at once."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    resources = {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
    sink = _weights_sink(setup.weights_dir)
    trainable = tune.with_resources(
        tune.with_parameters(_trainable_class(), setup=setup, sink=sink), resources
    )
    storage_path = (Path("mlruns") / "prunetune" / cfg.study_name / "ray").resolve()  # trial logs
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=cfg.workers),
            num_samples=remaining,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            storage_path=str(storage_path),
            name=f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
            verbose=0,
            log_to_file=True,
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuner.fit()
