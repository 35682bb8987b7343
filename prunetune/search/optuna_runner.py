"""The embedded default runner: an Optuna multi-objective study driven with ask/tell.

Call order: `run_search(cfg)` -> prepare_search (data, base model, space, base metrics) ->
open_study (create + warm start, or resume) -> recover_unfinished -> loop {ask, run_trial, tell,
listeners.on_trial_end} until `cfg.budget.trials` trials have finished, `cfg.budget.timeout` seconds
have passed (the trial in flight finishes), a strategy's sweep is done, or FAILURE_STREAK trials in
a row failed the same way (RepeatedFailureError); with screening, each ask is preceded by
`Screener.refill` (cheap configs screened, the most promising enqueued) -> end_search: finalize
(test accuracy of the front, weights of dominated trials dropped), listeners.on_search_end.
Ctrl-C marks the running trial interrupted (it is re-run on resume) and re-raises; nothing
finished is lost. `drive()`, the
start / signal / finish logic around the loop, is shared with the Ray runner.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Protocol

import optuna

from prunetune import interrupts
from prunetune.config import SearchSettings
from prunetune.errors import PrunetuneError
from prunetune.paths import weights_dir
from prunetune.search.objective import SearchSetup, prepare_search, run_trial
from prunetune.search.objectives import get_objective
from prunetune.search.records import COMPLETE, FAILED, REJECTED, FailureStreak, TrialRecord
from prunetune.search.results import SearchResult, summarize
from prunetune.search.screening import Screener
from prunetune.search.study import (
    budget_lock,
    count_finished,
    open_study,
    others_running_here,
    recover_unfinished,
    requeue_unfinished,
    worker_id,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


class SearchListener(Protocol):
    """Observers of a search (MLflow tracking, progress). Called in this order."""

    def on_search_start(self, setup: SearchSetup, study: optuna.Study) -> None: ...
    def on_trial_end(self, record: TrialRecord, study: optuna.Study) -> None: ...
    def on_search_end(self, result: SearchResult, study: optuna.Study, *, outcome: str) -> None:
        """outcome: "finished", "interrupted" (Ctrl-C / SIGTERM) or "failed" (an error)."""


class Deadline:
    """`seconds` from its creation (None: never). A search stops *asking* once it has passed: the
    trial in flight finishes, as with Optuna's `timeout`."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds

    def passed(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end


def objective_values(record: TrialRecord, objectives: list[str]) -> list[float]:
    return [float(record.metrics[get_objective(o).key]) for o in objectives]


def tell(
    study: optuna.Study, trial: optuna.trial.Trial, record: TrialRecord, cfg: SearchSettings
) -> None:
    """Store the record on the trial and finish it in the state the record says."""
    for k, v in record.user_attrs().items():
        trial.set_user_attr(k, v)
    if record.state == COMPLETE:
        if cfg.selection.min_accuracy is not None:  # feasible when <= 0
            trial.set_constraint(
                "min_accuracy", cfg.selection.min_accuracy - record.metrics["accuracy"]
            )
        if cfg.selection.max_flops is not None:
            trial.set_constraint("max_flops", record.metrics["flops"] - cfg.selection.max_flops)
        study.tell(trial, objective_values(record, cfg.selection.objectives))
    elif record.state == REJECTED:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        trial.set_user_attr("fail_reason", record.reason)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


class Proposer(Protocol):
    """What proposes full trials before each ask (screening, the targets planner)."""

    def refill(self, deadline: Deadline) -> bool:
        """Make sure a trial is waiting if one should; False: the deadline passed meanwhile."""


def make_proposer(setup: SearchSetup, study: optuna.Study) -> Proposer | None:
    """The `targets` strategy's planner, the screener of `--screen N`, or None (the sampler
    proposes)."""
    if setup.config.plan.strategy == "targets":
        from prunetune.search.targets import TargetPlanner

        return TargetPlanner(setup, study)
    return Screener(setup, study) if setup.config.plan.screening else None


def next_trial(
    study: optuna.Study,
    setup: SearchSetup,
    deadline: Deadline,
    screen: Proposer | None,
    *,
    sample: bool = False,
) -> tuple[optuna.trial.Trial, dict | None] | None:
    """The next trial of a search, asked and tagged with this worker under the study's budget lock
    (count + ask atomically: parallel searches never overshoot), with its params when `sample`
    (sampled under the lock too); None when no trial should start: the deadline passed, a
    strategy's sweep is done, the deadline passed while screening, or the budget is reached.
    Trials whose process died meanwhile are failed and re-queued first (requeue_unfinished)."""
    cfg = setup.config
    if deadline.passed() or setup.space.exhausted(study):
        return None
    if (
        screen is not None
        and count_finished(study)[0] < cfg.budget.trials
        and not screen.refill(deadline)
    ):
        return None
    with budget_lock(study):
        requeue_unfinished(study)  # a dead process's RUNNING trial no longer holds budget
        finished, running = count_finished(study)
        if finished + running >= cfg.budget.trials:
            return None
        trial = study.ask()
        trial.set_user_attr("worker", worker_id())
        return trial, setup.space.suggest(trial) if sample else None


OTHERS_POLL_S = 1.0


def wait_for_others(study: optuna.Study, setup: SearchSetup, deadline: Deadline) -> bool:
    """When the budget is full only because trials of other searches on this machine are in
    flight: wait OTHERS_POLL_S and say so (True: ask again), so that if one of them dies (kill -9)
    this search re-runs its trial and `--trials N` still means N finished. False: stop."""
    if deadline.passed() or setup.space.exhausted(study):
        return False
    if count_finished(study)[0] >= setup.config.budget.trials or not others_running_here(study):
        return False
    time.sleep(OTHERS_POLL_S)
    return True


def mark_interrupted(study: optuna.Study, trial: optuna.trial.Trial) -> None:
    """Finish a trial stopped by Ctrl-C / SIGTERM as FAIL marked interrupted (re-run on resume)."""
    trial.set_user_attr("interrupted", True)
    trial.set_user_attr("fail_reason", "interrupted (Ctrl-C or SIGTERM)")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)


def finish_trial(
    study: optuna.Study,
    trial: optuna.trial.Trial,
    record: TrialRecord,
    cfg: SearchSettings,
    listeners: list[SearchListener],
    log: Callable[[str], None],
) -> None:
    """Store the record on its trial (`tell`), log a failure, notify the listeners."""
    tell(study, trial, record, cfg)
    if record.state == FAILED:
        log(f"trial {trial.number} failed: {record.reason}")
    for listener in listeners:
        listener.on_trial_end(record, study)


def run_search(
    cfg: SearchSettings,
    *,
    listeners: list[SearchListener] = (),
    log=lambda m: None,
    progress=None,
    setup: SearchSetup | None = None,
) -> SearchResult:
    """Run (or resume) the search described by cfg until cfg.budget.trials trials have finished.
    Raises RepeatedFailureError (a PrunetuneError) when FAILURE_STREAK trials in a row failed alike.
    `setup`: one already prepared (the Python API's, around the caller's model and loop); else
    `prepare_search(cfg)` (the CLI's data set and recipe)."""
    setup = setup or prepare_search(cfg, weights_dir=weights_dir(cfg.study_name), log=log)
    study = open_study(cfg, setup.space, setup.base_metrics, log=log)
    for layer, why in setup.skipped_layers:
        if "model output" not in why:  # the classifier's outputs are never pruned: no news
            log(f"left unpruned: {layer} ({why})")
    replayed = recover_unfinished(study)
    if replayed:
        log(f"re-running {len(replayed)} trial(s) an earlier run left unfinished: {replayed}")
    streak = FailureStreak()

    def loop() -> None:
        deadline = Deadline(
            cfg.budget.timeout
        )  # each run its own window; trials already run are kept
        screen = make_proposer(setup, study)
        while True:
            interrupts.check()  # a Ctrl-C whose KeyboardInterrupt was swallowed stops here
            if progress:
                progress(count_finished(study)[0], cfg.budget.trials, study)
            asked = next_trial(study, setup, deadline, screen)
            if asked is None:
                if wait_for_others(study, setup, deadline):
                    continue
                return
            trial = asked[0]
            try:
                record = run_trial(
                    setup,
                    setup.space.suggest(trial),
                    trial.number,
                    replay_of=trial.user_attrs.get("replay_of"),
                )
            except KeyboardInterrupt:
                mark_interrupted(study, trial)
                raise
            finish_trial(study, trial, record, cfg, listeners, log)
            streak.observe(record)

    return drive(cfg, setup, study, listeners, loop, log=log)


def drive(
    cfg: SearchSettings,
    setup: SearchSetup,
    study: optuna.Study,
    listeners: list[SearchListener],
    run_trials: Callable[[], None],
    cleanup: Callable[[], None] = lambda: None,
    *,
    log: Callable[[str], None] = lambda m: None,
) -> SearchResult:
    """The part of a search both backends share: notify the listeners, run the trials with Ctrl-C
    and SIGTERM raising KeyboardInterrupt (see prunetune.interrupts), then `cleanup()` and,
    whatever happened, the end of the search (see `end_search`). Errors and Ctrl-C propagate
    afterwards."""
    if (
        setup.workload.num_classes and "num_classes" not in study.user_attrs
    ):  # chance level of the report
        study.set_user_attr("num_classes", setup.workload.num_classes)
    for listener in listeners:
        listener.on_search_start(setup, study)
    outcome = "failed"
    try:
        with interrupts.handle_interrupts():  # after ray.init, which sets its own SIGTERM handler
            run_trials()
        outcome = "finished"
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    finally:
        cleanup()
        result = end_search(cfg, setup, study, listeners, outcome, log=log)
    return result


def end_search(
    cfg: SearchSettings,
    setup: SearchSetup,
    study: optuna.Study,
    listeners: list[SearchListener],
    outcome: str,
    *,
    log: Callable[[str], None] = lambda m: None,
) -> SearchResult:
    """The result (finalized when the budget was reached, else summarized as it stands) handed to
    the listeners with the outcome. When finalizing is interrupted or fails, the listeners get the
    summarized result with outcome "interrupted" / "failed" and the exception propagates; the
    finished trials stay in the study either way."""
    if outcome == "finished":
        log(
            "search: no more trials to run; scoring the front on the test split and updating MLflow"
        )
    try:
        result = (
            finalize(study, setup, keep_all_weights=cfg.stores.keep_all_weights)
            if outcome == "finished"
            else summarize(study)
        )
        if outcome == "finished":  # a signal a __del__ or weakref callback swallowed meanwhile
            interrupts.check()
    except BaseException as exc:
        outcome = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        with interrupts.deferred():
            result = summarize(study)
        for listener in listeners:
            listener.on_search_end(result, study, outcome=outcome)
        raise
    for listener in listeners:
        listener.on_search_end(result, study, outcome=outcome)
    return result


def finalize(
    study: optuna.Study, setup: SearchSetup, *, keep_all_weights: bool = False
) -> SearchResult:
    """Score front members on the test split (once each; on the CPU, where exported models run and
    their verification re-scores them; a workload without test data scores none; a user's test_fn
    that fails leaves that member unscored, the reason in the study's "test_errors"), drop
    dominated trials' weights. A member whose file no longer loads (CheckpointError) is left
    unscored the same way: one trial's fault never ends the search or its resume."""
    result = summarize(study)
    tests = dict(study.user_attrs.get("test_accuracy", {}))
    errors = dict(study.user_attrs.get("test_errors", {}))
    for r in result.front_records():
        if str(r.number) not in tests and r.weights and Path(r.weights).is_file():
            try:
                test = setup.workload.test_accuracy(setup.load_trial(r.weights))
            except PrunetuneError as exc:  # a user's test_fn, or a file that no longer loads
                errors[str(r.number)] = str(exc)
                continue
            if test is not None:
                tests[str(r.number)] = test
    study.set_user_attr("test_accuracy", tests)
    if errors:
        study.set_user_attr("test_errors", errors)
    if not keep_all_weights:
        front = set(result.front)
        for r in result.records:
            if r.state == COMPLETE and r.number not in front and r.weights:
                Path(r.weights).unlink(missing_ok=True)
    return summarize(study)
