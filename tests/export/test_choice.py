"""Choosing the trial to export (prunetune.export.choice) from an in-memory study's result: a
trial by number, a selection rule or the default pick; its weights file where the search kept it."""

from __future__ import annotations

import pytest

from prunetune.errors import ConfigError, PrunetuneError
from prunetune.export.choice import choose_trial, trial_weights
from prunetune.search.records import FAILED
from prunetune.search.results import summarize
from tests.search.studies import add, new_study, record


@pytest.fixture
def result():
    study = new_study()
    add(study, record(0, accuracy=0.89, flops=400))  # within a point of the base: the default pick
    add(study, record(1, accuracy=0.80, flops=200))
    add(study, record(2, FAILED))
    return summarize(study)


def test_a_number_a_rule_or_the_default_pick(result):
    assert choose_trial(result, trial=1).number == 1
    assert choose_trial(result, select="min flops").number == 1
    assert choose_trial(result).number == result.pick == 0


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"trial": 7}, PrunetuneError, "study 'unit' has no trial 7"),
        ({"trial": 2}, PrunetuneError, r"trial 2 of study 'unit' is failed \(failed: why\)"),
        ({"trial": 1, "select": "min flops"}, ConfigError, "not both"),
        ({"select": "max fps where accuracy > 0.99"}, ConfigError, ""),
    ],
)
def test_what_cannot_be_exported_is_one_error(result, kwargs, error, message):
    with pytest.raises(error, match=message):
        choose_trial(result, **kwargs)


def test_a_study_without_a_complete_trial_has_nothing_to_export():
    study = new_study()
    add(study, record(0, FAILED))
    with pytest.raises(PrunetuneError, match="has no complete trial to export"):
        choose_trial(summarize(study))


def test_the_weights_are_where_the_search_kept_them(result, tmp_path):
    rec = result.record(1)
    rec.weights = str(tmp_path / "trial_1.pt")
    (tmp_path / "trial_1.pt").write_bytes(b"weights")
    assert trial_weights(rec, "unit", None) == tmp_path / "trial_1.pt"
    rec.weights = None
    with pytest.raises(PrunetuneError, match="the weights of trial 1 were not kept"):
        trial_weights(rec, "unit", None)
