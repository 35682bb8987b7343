"""Ray Tune backend: the same trial function, Optuna (same sampler, same study storage) as Tune's
searcher, K trials at once on a local Ray or on a cluster (`--address`).

Call order: prepare_search -> open_study (shared with the optuna backend) -> recover_unfinished ->
Tuner(with_resources(trainable), search_alg=ConcurrencyLimiter(PrunetuneOptunaSearch)) .fit() ->
finalize. The searcher writes each trial's TrialRecord into the Optuna study exactly as the embedded
runner does and calls the listeners (MLflow logging happens in this driver process), so `prunetune
pareto`, MLflow and export work unchanged. Re-running the command continues the study: finished
trials are kept, the ones in flight when it stopped are re-run.

Honest FPS under parallel trials: every trial trains under QuietLock.busy() and measures under
QuietLock.quiet() (a per-machine reader/writer lock), so no timing overlaps training on its machine.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

from prunetune.config import SearchConfig
from prunetune.errors import PrunetuneError
from prunetune.search.objective import SearchSetup, prepare_search, run_trial
from prunetune.search.optuna_runner import finalize, tell, weights_dir
from prunetune.search.records import FAILED, TrialRecord
from prunetune.search.results import SearchResult, summarize
from prunetune.search.study import count_finished, make_sampler, make_storage, open_study, \
    recover_unfinished, worker_id

NUMBER_KEY = "_prunetune_trial"


def _trainable(config: dict, setup: SearchSetup) -> None:
    """Runs in a Ray worker: one trial, reported once."""
    from ray import tune

    params = dict(config)
    number = int(params.pop(NUMBER_KEY))
    record = run_trial(setup, params, number)
    report = {"record": record.as_dict()}
    report.update({k: v for k, v in record.metrics.items() if isinstance(v, int | float)})
    tune.report(report)


def _searcher_class():
    from ray.tune.search.optuna import OptunaSearch

    class PrunetuneOptunaSearch(OptunaSearch):
        """OptunaSearch that stores prunetune's TrialRecords (rejected -> PRUNED, failed -> FAIL
        with its reason, complete -> values + constraints) and notifies listeners."""

        def __init__(self, *args, cfg: SearchConfig, on_record, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._cfg, self._on_record = cfg, on_record

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if trial_id in self._completed_trials:
                return
            ot_trial = self._ot_trials[trial_id]
            if result and "record" in result:
                record = TrialRecord(**result["record"])
            else:
                record = TrialRecord(number=ot_trial.number, state=FAILED, params=dict(ot_trial.params),
                                     reason="the Ray trial errored (see the Ray logs)" if error else "no result")
            record.number = ot_trial.number
            tell(self._ot_study, ot_trial, record, self._cfg)
            self._completed_trials.add(trial_id)
            self._on_record(record, self._ot_study)

    return PrunetuneOptunaSearch


def _init_ray(cfg: SearchConfig) -> None:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if ray.is_initialized():
        return
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        if cfg.address:
            ray.init(address=cfg.address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count(), **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise PrunetuneError(f"cannot start or join Ray ({cfg.address or 'local'}): "
                             f"{str(exc).splitlines()[0][:200]}") from None


def run_search_ray(cfg: SearchConfig, *, listeners=(), log=lambda m: None) -> SearchResult:
    """Run (or resume) the search with Ray Tune: at most cfg.workers trials at once."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    setup = prepare_search(cfg, weights_dir=weights_dir(cfg).resolve(), log=log)
    study = open_study(cfg, setup.space, setup.base_metrics)
    replayed = recover_unfinished(study)
    if replayed:
        log(f"re-running {len(replayed)} trial(s) an earlier run left unfinished: {replayed}")
    for listener in listeners:
        listener.on_search_start(setup, study)
    finished, running = count_finished(study)
    remaining = cfg.trials - finished - running
    outcome = "failed"
    try:
        if remaining > 0:
            _init_ray(cfg)
            _fit(cfg, setup, remaining, listeners, log, tune, ConcurrencyLimiter)
        outcome = "finished"
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    finally:
        study = open_study(cfg, setup.space, setup.base_metrics)  # fresh view of the storage
        result = (finalize(study, setup, keep_all_weights=cfg.keep_all_weights)
                  if outcome == "finished" else summarize(study))
        for listener in listeners:
            listener.on_search_end(result, study, outcome=outcome)
    return result


def _fit(cfg, setup, remaining, listeners, log, tune, ConcurrencyLimiter) -> None:
    driver = worker_id()

    def space(trial):
        setup.space.suggest(trial)
        trial.set_user_attr("worker", driver)
        return {NUMBER_KEY: trial.user_attrs.get("replay_of", trial.number)}

    def on_record(record, study):
        if record.state == FAILED:
            log(f"trial {record.number} failed: {record.reason}")
        for listener in listeners:
            listener.on_trial_end(record, study)

    metrics = [_metric(o) for o in cfg.objectives]
    modes = ["max" if _direction(o) == "maximize" else "min" for o in cfg.objectives]
    searcher = _searcher_class()(space=space, metric=metrics, mode=modes, sampler=make_sampler(cfg),
                                 storage=make_storage(cfg.storage_url), study_name=cfg.study_name,
                                 cfg=cfg, on_record=on_record)
    resources = {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(_trainable, setup=setup), resources)
    storage_path = (Path("mlruns") / "prunetune" / cfg.study_name / "ray").resolve()
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=cfg.workers),
                                    num_samples=remaining, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(storage_path), name=f"run-{time.strftime('%Y%m%d-%H%M%S')}",
                                  verbose=0, log_to_file=True))
    log(f"ray: {remaining} trial(s), at most {cfg.workers} at once, {resources}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuner.fit()


def _metric(name: str) -> str:
    from prunetune.search import pareto

    return pareto.get_objective(name).key


def _direction(name: str) -> str:
    from prunetune.search import pareto

    return pareto.get_objective(name).direction
