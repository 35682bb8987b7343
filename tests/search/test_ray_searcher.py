"""The driver's side of a Ray search (prunetune.search.ray_searcher.RayTrials) on a real Optuna
study, without Ray: Tune trial ids asked for trials up to the budget, finished ones stored from
the record they sent (or failed), those in flight marked interrupted. (Searches on a real Ray:
tests/search/test_ray_runner.py.)"""

from __future__ import annotations

import json

import pytest

from prunetune.config import SearchSettings
from prunetune.search.ray_searcher import RayTrials
from prunetune.search.ray_worker import NUMBER_KEY, RECORD_KEY, REPLAY_KEY
from prunetune.search.records import FAILED, INTERRUPTED, record_from_trial
from prunetune.search.setup import SearchSetup
from prunetune.search.study import make_storage
from prunetune.search.study_store import load
from prunetune.spaces.space import GroupSpec, SearchSpace
from tests.search.studies import record


@pytest.fixture
def trials(tmp_path) -> RayTrials:
    cfg = SearchSettings.from_flat(trials=2, strategy="search", objectives=["accuracy", "flops"])
    space = SearchSpace(groups={"0": GroupSpec(8, 0.5, 0.0, 0.5)}, quant_layers=["0"], bits=[32])
    storage = make_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = load(storage, "s", directions=["maximize", "minimize"])
    setup = SearchSetup(cfg, None, None, space, {}, tmp_path, [], workload=None)
    return RayTrials(cfg, setup, study, listeners=[], log=lambda m: None, progress=None)


def test_trials_are_asked_up_to_the_budget_and_stored_from_what_they_sent(trials):
    first, second = trials.suggest("t1"), trials.suggest("t2")
    assert (first[NUMBER_KEY], second[NUMBER_KEY]) == (0, 1) and first[REPLAY_KEY] is None
    assert "ratio:0" in first and trials.suggest("t3") is None  # two trials: the budget
    sent = record(0, accuracy=0.8, flops=300)
    trials.complete("t1", {RECORD_KEY: json.dumps(sent.as_dict()), "node_id": "n1"}, False)
    trials.complete("t1", None, True)  # Tune may report a trial twice: stored once
    trials.complete("t2", None, True)
    done, failed = (record_from_trial(t) for t in trials.study.get_trials())
    assert done.metrics == sent.metrics and trials.study.trials[0].values == [0.8, 300.0]
    assert trials.study.trials[0].user_attrs["ray_node"] == "n1"
    assert failed.state == FAILED and failed.reason.startswith("the Ray trial failed")


def test_trials_still_in_flight_are_interrupted_for_a_rerun(trials):
    trials.suggest("t1")
    trials.interrupt_unfinished()
    trials.interrupt_unfinished()  # once
    [only] = trials.study.get_trials()
    assert record_from_trial(only).state == INTERRUPTED
