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
weights, and export refuses it. Limits: every node needs prunetune installed (same version).
Early stopping (ASHA) is deliberately absent: Tune reports stopped trials to Optuna as
complete with early values, which would pollute the Pareto front.

Modules: `ray_cluster` (join or start Ray, resources), `ray_worker` (the trial actor, weights
shipped to the driver), `ray_searcher` (Tune's searcher on the study); this one runs the Tuner.
"""

from __future__ import annotations

import logging
import os
import time
import warnings

import optuna

from prunetune.config import SearchSettings
from prunetune.paths import inside, study_dir, weights_dir
from prunetune.search.objective import prepare_search
from prunetune.search.optuna_runner import SearchListener, drive
from prunetune.search.ray_cluster import RAY_ENV, SILENCED_LOGGER, check_resources, init_ray
from prunetune.search.ray_searcher import make_searcher
from prunetune.search.ray_worker import trainable_class, weights_sink
from prunetune.search.results import SearchResult
from prunetune.search.setup import SearchSetup
from prunetune.search.study import count_finished, open_study, recover_unfinished


def run_search_ray(
    cfg: SearchSettings,
    *,
    listeners: list[SearchListener] = (),
    log=lambda m: None,
    progress=None,
    setup: SearchSetup | None = None,
) -> SearchResult:
    """Run (or resume) the search with Ray Tune until cfg.budget.trials trials have finished, at
    most cfg.runner.workers at once. Raises PrunetuneError (one line) if Ray cannot be started or
    joined, or if no node of a local Ray can hold one trial. A Ray the caller started is used and
    left running; one this function started (or joined) is shut down (disconnected) before it
    returns. `setup`: one already prepared (the Python API's; its weights folder must be absolute),
    else prepared here."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    logging.getLogger(SILENCED_LOGGER).setLevel(logging.ERROR)

    owns_ray = not ray.is_initialized()
    try:
        if cfg.runner.address and owns_ray:
            init_ray(
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
        remaining = cfg.budget.trials - finished - running
        if remaining > 0:
            if not ray.is_initialized():
                init_ray(cfg)
            check_resources(cfg, remaining, log)
        return _run(cfg, setup, study, remaining, listeners, log, progress)
    finally:
        if owns_ray and ray.is_initialized():
            ray.shutdown()


def _run(
    cfg: SearchSettings,
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
            progress(count_finished(study)[0], cfg.budget.trials, study)
        if remaining > 0:
            searcher = make_searcher(cfg, setup, study, listeners, log, progress)
            _fit(cfg, setup, searcher, remaining)
            if searcher.trials.stop_error is not None:
                raise searcher.trials.stop_error

    def cleanup() -> None:
        if searcher is not None:
            searcher.trials.interrupt_unfinished()

    return drive(cfg, setup, study, listeners, run_trials, cleanup, log=log)


def _fit(cfg: SearchSettings, setup: SearchSetup, searcher, remaining: int) -> None:
    """Tune runs `remaining` trials at most (the searcher stops at the budget), cfg.runner.workers
    at once."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    resources = {"cpu": cfg.runner.cpus_per_trial, "gpu": cfg.runner.gpus_per_trial}
    sink = weights_sink(setup.weights_dir)
    trainable = tune.with_resources(
        tune.with_parameters(trainable_class(), setup=setup, sink=sink), resources
    )
    storage_path = inside(study_dir(cfg.study_name), "ray")  # Tune's trial logs
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=cfg.runner.workers),
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
