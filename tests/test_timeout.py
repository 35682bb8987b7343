"""`--timeout SECONDS`: the trial in flight finishes, then the search stops (outcome "finished",
front finalized); re-running continues the study; with --trials, whichever comes first."""

from __future__ import annotations

import re
import time

import pytest

from prunetune.cli import main
from prunetune.config import SearchSettings
from prunetune.search.api import ProgressBar
from prunetune.search.optuna_runner import run_search
from tests.helpers import finished, load_study, search_args

TINY = dict(
    model="tiny_cnn",
    dataset="digits",
    base_epochs=2,
    epochs=1,
    subset=100,
    fps_repeats=3,
    threads=1,
)


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf"])
def test_bad_timeout_is_one_line_exit_2(isolated, capsys, value):
    assert main(search_args("t", 2, "--timeout", value)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("prunetune: error: timeout"), err
    assert not (isolated / "mlruns").exists()


class SlowTrialEnd:
    """A listener that keeps each trial's end busy for `seconds`: with a timeout shorter than that,
    the deadline always passes while the first trial of a run is still being finished."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.outcomes = seconds, []

    def on_search_start(self, setup, study) -> None: ...

    def on_trial_end(self, record, study) -> None:
        time.sleep(self.seconds)

    def on_search_end(self, result, study, *, outcome) -> None:
        self.outcomes.append(outcome)


@pytest.mark.slow
def test_timeout_finishes_the_trial_in_flight_stops_and_resumes(isolated):
    # the per-group search: its three warm-start trials wait in the study, so "no other began" shows
    cfg = SearchSettings.from_flat(**TINY, study="to", trials=20, timeout=0.5, strategy="search")
    slow = SlowTrialEnd(0.6)
    result = run_search(cfg, listeners=[slow])
    study = load_study(isolated, "to")
    # the in-flight trial finished, no other began (the other warm-start trials still wait)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "WAITING", "WAITING"]
    assert slow.outcomes == ["finished"]
    assert result.front and set(study.user_attrs["test_accuracy"]) == {str(n) for n in result.front}
    run_search(cfg, listeners=[slow])  # a new window: one more trial, the study continues
    study = load_study(isolated, "to")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "WAITING"]
    # --trials first: a generous timeout, the budget of 3 stops it
    run_search(
        SearchSettings.from_flat(**TINY, study="to", trials=3, timeout=3600.0, strategy="search")
    )
    assert finished(load_study(isolated, "to")) == 3


def test_progress_bar_shows_the_time_left():
    assert ProgressBar().time_left() is None
    left = ProgressBar(timeout=125).time_left()
    assert re.fullmatch(r"2:0[45]", left), left
