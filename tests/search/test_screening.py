"""Multi-fidelity screening: cheap configs live in `<study>.screen`; only the full-fidelity trials
they promote (enqueued into the study) reach the front, the pareto tags, hypervolume and export."""

from __future__ import annotations

import json

import mlflow
import pytest

from prunetune.cli import main
from prunetune.search.results import summarize
from prunetune.search.screening import screen_objectives
from tests.helpers import finished, load_study, search_args

pytestmark = pytest.mark.slow


def test_screen_objectives_use_macs_for_fps():
    assert screen_objectives(["accuracy", "fps"]) == ["accuracy", "macs"]
    assert screen_objectives(["accuracy", "flops", "fps", "size"]) == ["accuracy", "flops", "size"]


def test_screened_configs_never_reach_front_tags_hypervolume_or_export(isolated, capsys):
    # 3 warm-start trials, then 3 trials each promoted from 4 screened configs
    assert main(search_args("scr", 6, "--strategy", "search", "--screen", "4")) == 0
    study, screen = load_study(isolated, "scr"), load_study(isolated, "scr.screen")
    assert screen.user_attrs["screen_of"] == "scr" and len(screen.trials) == 12
    assert all(
        "fps" not in t.user_attrs["record"]["metrics"] for t in screen.trials
    )  # no FPS at screening
    full = study.trials
    promoted = [t.user_attrs["screened_from"] for t in full if "screened_from" in t.user_attrs]
    assert len(full) == 6 and len(promoted) == 3 and len(set(promoted)) == 3
    for t in full:
        if (
            "screened_from" in t.user_attrs
        ):  # promoted = run at full fidelity with the screened params
            assert t.params == screen.trials[t.user_attrs["screened_from"]].params
        rec = t.user_attrs["record"]
        assert rec["curve"] and "fps" in rec["metrics"] and rec["weights"]
    result = summarize(study)
    full_numbers = {t.number for t in full}
    assert set(result.front) <= full_numbers
    assert len(result.hypervolume) == sum(t.state.name == "COMPLETE" for t in full)
    # MLflow: one child run per full trial, screening only as parent metrics
    mlflow.set_tracking_uri(f"sqlite:///{isolated / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["scr"], output_format="list")
    parent = next(r for r in runs if r.data.tags.get("prunetune.role") == "search")
    children = [r for r in runs if r.data.tags.get("prunetune.role") == "trial"]
    assert len(children) == 6 and all("fps" in c.data.metrics for c in children)
    tagged = sorted(int(c.data.tags["trial"]) for c in children if c.data.tags["pareto"] == "true")
    assert tagged == sorted(result.front)
    assert (
        parent.data.metrics["configs_screened"] == 12
        and parent.data.metrics["configs_promoted"] == 3
    )
    assert parent.data.tags["screening"] == "true" and parent.data.tags["strategy"] == "search"
    assert mlflow.search_experiments(filter_string="name = 'scr.screen'") == []
    capsys.readouterr()
    # export picks from the full study's front
    assert main(["export", "--study", "scr", "--format", "state-dict", "--out", "exp"]) == 0
    card = json.loads((isolated / "exp" / "card.json").read_text())
    assert card["trial"] in result.front
    # resume: the screening study continues, its old configs are not promoted twice
    assert main(search_args("scr", 7, "--strategy", "search", "--screen", "4")) == 0
    study = load_study(isolated, "scr")
    assert len(load_study(isolated, "scr.screen").trials) == 16
    promoted = [
        t.user_attrs["screened_from"] for t in study.trials if "screened_from" in t.user_attrs
    ]
    assert len(promoted) == 4 == len(set(promoted))


def test_no_screen_runs_the_sampler_alone(isolated):
    assert main(search_args("plain", 4)) == 0  # screening is opt-in
    assert all("screened_from" not in t.user_attrs for t in load_study(isolated, "plain").trials)
    from prunetune.search.study_store import storage_of, study_exists

    assert not study_exists(storage_of(load_study(isolated, "plain")), "plain.screen")


def test_ray_backend_screens_in_the_driver_and_stops_at_the_timeout(isolated):
    """Under Ray the driver screens between the workers' trials (3 warm-start trials, then one
    promoted); a later run whose window closes during its first trial stops there."""
    from prunetune.config import SearchSettings
    from prunetune.search.ray_runner import run_search_ray
    from tests.test_timeout import TINY, SlowTrialEnd

    cfg = SearchSettings.from_flat(
        **TINY, study="rs", trials=4, strategy="search", screen=2, backend="ray", workers=1
    )
    run_search_ray(cfg)
    trials = load_study(isolated, "rs").trials
    assert len(trials) == 4 and [t.user_attrs.get("screened_from") for t in trials][3] is not None
    assert len(load_study(isolated, "rs.screen").trials) == 2
    slow = SlowTrialEnd(6.0)
    run_search_ray(
        SearchSettings.from_flat(
            **TINY,
            study="rs",
            trials=40,
            strategy="search",
            screen=2,
            backend="ray",
            workers=1,
            timeout=5.0,
        ),
        listeners=[slow],
    )
    assert finished(load_study(isolated, "rs")) <= 5 and slow.outcomes == ["finished"]
