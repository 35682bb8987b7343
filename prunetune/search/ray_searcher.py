"""The driver side of a Ray search: Tune's searcher is a plain `ray.tune.search.Searcher` that
hands every call to `RayTrials`, which asks, tells and interrupts on prunetune's Optuna study
(with the sampler `open_study` gave it): the study is the only search state."""

from __future__ import annotations

import json
from typing import Callable

import optuna

from prunetune.config import SearchSettings
from prunetune.search.objectives import get_objective
from prunetune.search.optuna_runner import (
    Deadline,
    SearchListener,
    finish_trial,
    make_proposer,
    mark_interrupted,
    next_trial,
)
from prunetune.search.ray_worker import NUMBER_KEY, RECORD_KEY, REPLAY_KEY
from prunetune.search.records import FAILED, FailureStreak, RepeatedFailureError, TrialRecord
from prunetune.search.setup import SearchSetup
from prunetune.search.study import count_finished


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
        cfg: SearchSettings,
        setup: SearchSetup,
        study: optuna.Study,
        listeners: list[SearchListener],
        log: Callable[[str], None],
        progress,
    ) -> None:
        self.cfg, self.setup, self.study = cfg, setup, study
        self.listeners, self.log, self.progress = listeners, log, progress
        self.deadline = Deadline(cfg.budget.timeout)  # starts with the searcher: this run's window
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
            self.progress(count_finished(self.study)[0], self.cfg.budget.trials, self.study)
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


def make_searcher(
    cfg: SearchSettings, setup: SearchSetup, study: optuna.Study, listeners, log, progress
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

    objectives = [get_objective(o) for o in cfg.selection.objectives]
    modes = ["max" if o.direction == "maximize" else "min" for o in objectives]
    return StudySearcher(
        RayTrials(cfg, setup, study, listeners, log, progress), [o.key for o in objectives], modes
    )
