"""TrialRecord <-> Optuna trial: what the runners store (`user_attrs`) and what every reader
rebuilds (`record_from_trial`), for every state a trial can be in; the failure streak."""

from __future__ import annotations

import json

import optuna
import pytest

from prunetune.search.records import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    REJECTED,
    RUNNING,
    TRACEBACK_CHARS,
    FailureStreak,
    RepeatedFailureError,
    TrialRecord,
    record_from_trial,
)
from tests.search.studies import add, new_study, params, record


@pytest.mark.parametrize("state", [COMPLETE, FAILED, REJECTED])
def test_a_finished_record_round_trips_through_the_stored_trial(state):
    rec = record(0, state)
    assert record_from_trial(add(new_study(), rec)) == rec


def test_a_record_is_its_own_copy_of_what_is_stored():
    """Changing a record (a report adding a value, a user editing `run.records`) never changes the
    study's stored trial: Optuna's cached trials are read without copying."""
    study = new_study()
    add(study, record(0, COMPLETE))
    rec = record_from_trial(study.get_trials(deepcopy=False)[0])
    rec.metrics["test_accuracy"] = 0.5
    rec.config["ratios"]["0"] = 0.9
    rec.curve.append(9.9)
    again = record_from_trial(study.get_trials(deepcopy=False)[0])
    assert again == record(0, COMPLETE)


def test_what_is_stored_is_json_without_number_params_or_traceback():
    """RDB storages keep user attrs as JSON: the stored form must survive it unchanged."""
    rec = record(0, FAILED)
    rec.traceback = "Traceback (most recent call last):\n  ...\nValueError: x"
    attrs = rec.user_attrs()
    assert json.loads(json.dumps(attrs)) == attrs
    assert set(attrs) == {"record", "traceback"}
    assert not {"number", "params", "traceback"} & set(attrs["record"])
    assert "traceback" not in record(1).user_attrs()  # none stored when there is none


def test_a_failed_trials_traceback_comes_back():
    rec = record(0, FAILED)
    rec.traceback = "Traceback (most recent call last):\nRuntimeError: boom"
    assert record_from_trial(add(new_study(), rec)).traceback == rec.traceback


def test_a_long_traceback_is_stored_as_its_last_characters():
    rec = record(0, FAILED)
    rec.traceback = "head " + "x" * (TRACEBACK_CHARS + 500) + " RuntimeError: the end"
    stored = record_from_trial(add(new_study(), rec)).traceback
    assert len(stored) == TRACEBACK_CHARS
    assert stored == rec.traceback[-TRACEBACK_CHARS:] and stored.endswith("RuntimeError: the end")


def test_a_running_trial_is_a_running_record_with_its_params():
    back = record_from_trial(add(new_study(), record(0, RUNNING), worker="host:123"))
    assert (back.number, back.state, back.params) == (0, RUNNING, params())
    assert (back.metrics, back.reason, back.weights, back.traceback) == ({}, "", None, "")


def test_a_trial_stopped_by_ctrl_c_is_interrupted_with_the_reason():
    back = record_from_trial(add(new_study(), record(0, INTERRUPTED)))
    assert (back.state, back.reason, back.params) == (
        INTERRUPTED,
        "interrupted (Ctrl-C or SIGTERM)",
        params(),
    )


def test_a_failed_trial_without_a_record_or_reason_reads_failed():
    """A trial failed outside prunetune's tell (e.g. by Optuna itself) still reads as failed."""
    study = new_study()
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    back = record_from_trial(study.get_trials()[0])
    assert (back.state, back.reason, back.params) == (FAILED, "failed", {})


def test_a_replay_keeps_its_origin_and_seed():
    rec = record(0)
    rec.replay_of, rec.seed = 7, 4242
    back = record_from_trial(add(new_study(), rec, user_attrs={"replay_of": 7}))
    assert (back.replay_of, back.seed) == (7, 4242)


def test_a_replay_still_running_names_the_trial_it_replays():
    """A re-queued trial carries `replay_of` from its enqueueing (study.recover_unfinished) before
    any record exists: its record says which trial it re-runs while it runs, after Ctrl-C, or when
    the record its runner wrote lacks it."""
    study = new_study()
    running = add(study, record(0, RUNNING), user_attrs={"replay_of": 3})
    interrupted = add(study, record(1, INTERRUPTED), user_attrs={"replay_of": 3})
    assert record_from_trial(running).replay_of == 3
    assert record_from_trial(interrupted).replay_of == 3
    assert record_from_trial(add(study, record(2, RUNNING))).replay_of is None
    # a replay whose runner wrote a record without it (Ray: its actor died, no result came back)
    assert (
        record_from_trial(add(study, record(3, FAILED), user_attrs={"replay_of": 3})).replay_of == 3
    )


def test_an_enqueued_trial_reads_as_waiting():
    study = new_study()
    study.enqueue_trial(params())
    back = record_from_trial(study.get_trials()[0])
    assert (back.state, back.params) == ("waiting", {})


def _failed(reason: str) -> TrialRecord:
    return TrialRecord(number=0, state=FAILED, params={}, reason=reason)


def test_the_same_failure_five_times_in_a_row_stops_the_search():
    streak = FailureStreak(limit=5)
    for _ in range(4):
        streak.observe(_failed("ValueError: x at f.py:1"))
    with pytest.raises(RepeatedFailureError, match="5 trials in a row failed with ValueError: x"):
        streak.observe(_failed("ValueError: x at f.py:1"))


def test_another_reason_or_any_other_outcome_restarts_the_count():
    streak = FailureStreak(limit=3)
    for rec in [
        _failed("a"),
        _failed("a"),
        _failed("b"),
        _failed("b"),
        record(0),
        _failed("b"),
        _failed("b"),
        record(1, REJECTED),
        _failed("b"),
    ]:
        streak.observe(rec)
    assert (streak.reason, streak.count) == ("b", 1)
