"""The ask-and-tell runner's pieces (prunetune.search.optuna_runner) on in-memory studies: a record
told to its trial comes back from the study as it was, in the state it says; the deadline.
(Whole searches: tests/test_search_e2e.py and the strategy tests.)"""

from __future__ import annotations

import optuna
import pytest

from prunetune.config import SearchSettings
from prunetune.search.optuna_runner import Deadline, mark_interrupted, objective_values, tell
from prunetune.search.records import COMPLETE, FAILED, INTERRUPTED, REJECTED, record_from_trial
from tests.search.studies import new_study, record


@pytest.mark.parametrize(
    "state, optuna_state",
    [
        (COMPLETE, optuna.trial.TrialState.COMPLETE),
        (REJECTED, optuna.trial.TrialState.PRUNED),
        (FAILED, optuna.trial.TrialState.FAIL),
    ],
)
def test_a_told_record_comes_back_from_the_study_as_it_was(state, optuna_state):
    objectives = ["accuracy", "size"]
    study = new_study(tuple(objectives))
    rec = record(0, state, size_bytes=4096.0)
    tell(study, study.ask(), rec, SearchSettings.from_flat(objectives=objectives, min_accuracy=0.5))
    [frozen] = study.get_trials()
    assert frozen.state == optuna_state
    again = record_from_trial(frozen)
    assert again.as_dict() == {**rec.as_dict(), "params": {}}  # params: the sampler's (none here)
    if state == COMPLETE:
        assert frozen.values == [0.8, 4096.0] == objective_values(rec, objectives)
    if state == FAILED:
        assert frozen.user_attrs["fail_reason"] == rec.reason


def test_an_interrupted_trial_is_failed_and_marked_for_a_rerun():
    study = new_study()
    mark_interrupted(study, study.ask())
    [frozen] = study.get_trials()
    assert frozen.state == optuna.trial.TrialState.FAIL
    assert record_from_trial(frozen).state == INTERRUPTED


def test_the_deadline():
    assert not Deadline(None).passed() and not Deadline(60).passed()
    assert Deadline(0).passed()
