"""The `targets` strategy's planner (prunetune.search.targets): the order of its plan over an
in-memory study of full trials. (Whole searches with it: tests/spaces/test_targets.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import optuna

from prunetune.search.targets import TargetPlanner, candidate_study_name

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _planner(tmp_path, done: list[tuple[float, str]], **extra_attrs) -> TargetPlanner:
    """A planner over targets 0.4 and 0.15 whose study holds full trials `done` (target, kind)."""
    study = optuna.create_study(directions=["maximize"])
    for target, kind in done:
        attrs = {"target": target, "candidate": kind, **extra_attrs}
        study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs=attrs))
    setup = SimpleNamespace(
        space=SimpleNamespace(targets=[0.4, 0.15]),
        config=SimpleNamespace(
            stores=SimpleNamespace(storage_url=f"sqlite:///{tmp_path / 'optuna.db'}")
        ),
    )
    return TargetPlanner(setup, study)


def test_baselines_come_first_at_every_target_lightest_first(tmp_path):
    assert _planner(tmp_path, []).next_step() == (0.4, "uniform")
    assert _planner(tmp_path, [(0.4, "uniform")]).next_step() == (0.15, "uniform")
    uniform = [(0.4, "uniform"), (0.15, "uniform")]
    assert _planner(tmp_path, uniform).next_step() == (0.4, "global")
    assert _planner(tmp_path, [*uniform, (0.4, "global")]).next_step() == (0.15, "global")


def test_then_the_target_with_fewest_searched_candidates_cheapest_first(tmp_path):
    baselines = [(t, k) for k in ("uniform", "global") for t in (0.4, 0.15)]
    assert _planner(tmp_path, baselines).next_step() == (0.15, "search")
    assert _planner(tmp_path, [*baselines, (0.15, "search")]).next_step() == (0.4, "search")
    planner = _planner(tmp_path, [*baselines, (0.15, "search")])
    planner._barren.add(0.4)  # no candidate at 0.4 could be promoted: skipped
    assert planner.next_step() == (0.15, "search")
    planner._barren.add(0.15)
    assert planner.next_step() is None


def test_replayed_trials_do_not_count_twice_in_the_plan(tmp_path):
    planner = _planner(tmp_path, [(0.4, "uniform")], replay_of=0)
    assert planner.next_step() == (0.4, "uniform")


def test_candidate_studies_are_named_after_the_study_and_target():
    assert candidate_study_name("net-mnist", 0.25) == "net-mnist.target-0.25"
    assert candidate_study_name("s", 0.1) == "s.target-0.1"
