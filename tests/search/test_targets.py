"""The `targets` strategy's planner (prunetune.search.targets): the order of its plan over an
in-memory study of full trials. (Whole searches with it: tests/spaces/test_targets.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import optuna

from prunetune.search.target_refine import MAX_REFINED
from prunetune.search.targets import TargetPlanner, candidate_study_name

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _planner(
    tmp_path,
    done: list[tuple[float, str]],
    *,
    given=True,
    accuracy=None,
    targets=(0.4, 0.15),
    select=None,
    **extra_attrs,
) -> TargetPlanner:
    """A planner over `targets` (given by the user, or the defaults when not `given`) whose study
    holds finished full trials `done` (target, kind), scored `accuracy[target]` (default 0.5), of
    a base at 0.9 in a space whose lightest config keeps all its MACs; the default pick within 1
    point, or the rule `select`."""
    study = optuna.create_study(directions=["maximize"])
    for target, kind in done:
        record = {"metrics": {"accuracy": (accuracy or {}).get(target, 0.5)}}
        attrs = {"target": target, "candidate": kind, "record": record, **extra_attrs}
        study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs=attrs))
    setup = SimpleNamespace(
        space=SimpleNamespace(targets=list(targets), bounds=lambda: (0.001, 1.0)),
        base_metrics={"accuracy": 0.9},
        workload=SimpleNamespace(num_classes=10),
        config=SimpleNamespace(
            stores=SimpleNamespace(storage_url=f"sqlite:///{tmp_path / 'optuna.db'}"),
            plan=SimpleNamespace(targets=list(targets) if given else None),
            selection=SimpleNamespace(select=select, max_drop=0.01),
        ),
    )
    return TargetPlanner(setup, study)


BASELINES = [(t, k) for k in ("uniform", "global") for t in (0.4, 0.15)]
STEEP = {0.4: 0.5, 0.15: 0.35}  # base 0.9: the gap from the base to 0.4 holds 0.27 of hypervolume


def test_baselines_come_first_at_every_target_lightest_first(tmp_path):
    assert _planner(tmp_path, []).next_step() == (0.4, "uniform")
    assert _planner(tmp_path, [(0.4, "uniform")]).next_step() == (0.15, "uniform")
    uniform = [(0.4, "uniform"), (0.15, "uniform")]
    assert _planner(tmp_path, uniform).next_step() == (0.4, "global")
    assert _planner(tmp_path, [*uniform, (0.4, "global")]).next_step() == (0.15, "global")


def test_then_the_target_with_fewest_searched_candidates_cheapest_first(tmp_path):
    baselines = BASELINES
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


def test_with_the_default_targets_a_steep_front_gets_a_lighter_target_and_its_baselines(tmp_path):
    planner = _planner(tmp_path, BASELINES, given=False, accuracy=STEEP)
    assert planner.next_step() == (0.6, "uniform")  # nearest the gap's geometric mean, 0.63
    assert planner.study.user_attrs["refined_targets"] == [0.6]
    assert planner.targets() == [0.6, 0.4, 0.15]
    assert planner.next_step() == (0.6, "uniform")  # planned once: its baselines come next
    assert planner.study.user_attrs["refined_targets"] == [0.6]


def test_targets_the_user_gave_or_a_flat_front_are_kept_as_they_are(tmp_path):
    assert _planner(tmp_path, BASELINES, accuracy=STEEP).next_step() == (0.15, "search")
    flat = {0.4: 0.89, 0.15: 0.88}
    planner = _planner(tmp_path, BASELINES, given=False, accuracy=flat)
    assert planner.next_step() == (0.15, "search")
    assert "refined_targets" not in planner.study.user_attrs


def test_no_target_is_added_while_a_baseline_runs_nor_past_the_most_allowed(tmp_path):
    planner = _planner(tmp_path, BASELINES[:-1], given=False, accuracy=STEEP)
    running = {"target": 0.15, "candidate": "global"}
    planner.study.add_trial(
        optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, user_attrs=running)
    )
    assert planner.next_step() == (0.15, "search")
    planner = _planner(tmp_path, BASELINES, given=False, accuracy=STEEP)
    added = [0.25, 0.07, 0.03, 0.015, 0.007, 0.003][:MAX_REFINED]
    planner.study.set_user_attr("refined_targets", added)
    assert planner.next_step()[1] in ("uniform", "global")  # the added targets' baselines
    done = [(t, k) for k in ("uniform", "global") for t in added]
    planner = _planner(tmp_path, BASELINES + done, given=False, accuracy=STEEP)
    planner.study.set_user_attr("refined_targets", added)
    assert planner.next_step() == (min(added), "search")  # no more added; searched: added first


def test_every_other_searched_candidate_goes_where_the_default_pick_is_decided(tmp_path):
    targets = (0.4, 0.15, 0.05)  # base 0.9: 0.4 is within 1 point, so the pick moves at 0.15
    accuracy = {0.4: 0.895, 0.15: 0.85, 0.05: 0.6}
    baselines = [(t, k) for k in ("uniform", "global") for t in targets]

    def step(searched, **kw):
        kw = {"accuracy": accuracy, **kw}
        return _planner(tmp_path, baselines + searched, targets=targets, **kw).next_step()

    assert step([]) == (0.15, "search")
    assert step([(0.15, "search")]) == (0.05, "search")  # then the others, cheapest first
    assert step([(0.15, "search"), (0.05, "search")]) == (0.15, "search")
    assert step([], select="max fps where accuracy>=0.8") == (0.05, "search")  # a rule picks
    assert step([], accuracy={0.4: 0.7, 0.15: 0.6, 0.05: 0.5}) == (0.05, "search")  # none within


def test_a_target_whose_best_is_near_chance_is_searched_last(tmp_path):
    """Base 0.9, 10 classes: near chance below 0.1 + 0.25 x 0.8 = 0.3 (RegNetX's cheap targets)."""
    targets = (0.4, 0.15, 0.05)
    baselines = [(t, k) for k in ("uniform", "global") for t in targets]
    accuracy = {0.4: 0.6, 0.15: 0.35, 0.05: 0.2}
    planner = _planner(tmp_path, baselines, accuracy=accuracy, targets=targets)
    assert planner.next_step() == (0.15, "search")
    searched = [(0.15, "search"), (0.4, "search")]
    planner = _planner(tmp_path, baselines + searched, accuracy=accuracy, targets=targets)
    assert planner.next_step() == (0.05, "search")  # its turn once the others had theirs


def test_the_global_ranking_waits_where_uniform_scored_near_chance(tmp_path):
    """RegNetX at 300 s: 6 of its 18 baselines at near-chance targets left 2 searched configs."""
    targets = (0.4, 0.15, 0.05)
    accuracy = {0.4: 0.6, 0.15: 0.35, 0.05: 0.2}  # near chance below 0.3: 0.05

    def step(done):
        return _planner(tmp_path, done, accuracy=accuracy, targets=targets).next_step()

    uniform = [(t, "uniform") for t in targets]
    assert step(uniform) == (0.4, "global")
    both = [*uniform, (0.4, "global"), (0.15, "global")]
    assert step(both) == (0.15, "search")
    assert step([*both, (0.15, "search")]) == (0.4, "search")
    assert step([*both, (0.15, "search"), (0.4, "search")]) == (0.05, "global")
    every = {t: 0.2 for t in targets}  # all near chance (mobilenet_v2): nothing waits
    planner = _planner(tmp_path, uniform, accuracy=every, targets=targets)
    assert planner.next_step() == (0.4, "global")


def test_at_an_added_target_the_global_ranking_waits_for_every_searched_target(tmp_path):
    """An added target fills the front between two others (RegNetX: 0.7, 0.3, 0.85, 0.4, 0.6);
    its global ranking (8-15 points below uniform there) runs once every target had its turn."""
    flat = {0.7: 0.89, 0.4: 0.88, 0.15: 0.87}  # no gap left to fill: no other target is added

    def step(done):
        kw = {"given": False, "accuracy": flat, "select": "max fps where accuracy>=0.8"}
        planner = _planner(tmp_path, [*BASELINES, (0.7, "uniform"), *done], **kw)
        planner.study.set_user_attr("refined_targets", [0.7])
        return planner.next_step()

    assert step([]) == (0.7, "search")  # not (0.7, "global"): the added target is searched first
    assert step([(0.7, "search")]) == (0.15, "search")
    assert step([(0.7, "search"), (0.15, "search")]) == (0.4, "search")
    assert step([(0.7, "search"), (0.15, "search"), (0.4, "search")]) == (0.7, "global")
