"""The `targets` strategy (the default search, issue 22): candidates meet their MACs target within
the tolerance by construction (real pruned MACs, channel rounding on, several nets); uniform and
global-ranking configs are full trials at every target; the proxy's rank quality is measured and
logged; bad --targets values are one line, exit 2."""

from __future__ import annotations

import random
import warnings

import mlflow
import pytest
import torch

from prunetune.cli import main
from prunetune.compress import compress, inventory
from prunetune.config import SearchSettings
from prunetune.measure import count_macs
from prunetune.models.factory import create_model
from prunetune.search.objective import prepare_search
from prunetune.paths import weights_dir
from prunetune.search.optuna_runner import Deadline, run_search
from prunetune.search.study import load_existing, open_study
from prunetune.search.targets import TargetPlanner
from prunetune.search import targets
from prunetune.search.target_report import proxy_of, target_rows, targets_text
from prunetune.search.tracking import MlflowTracker
from prunetune.spaces import SearchSpace
from prunetune.spaces.targets import TOLERANCE, default_targets, make_target_space
from tests.helpers import search_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    ("net", "round_to"), [("mnist_net", 1), ("mnist_net", 4), ("tiny_cnn", 1), ("resnet18", 8)]
)
def test_candidates_meet_their_target_within_the_tolerance(net, round_to):
    """Random allocations, scaled onto each default target, pruned for real: MACs in
    [t (1 - TOLERANCE), t] x the base's, also with kept channels rounded to a multiple."""
    model = create_model(net, in_channels=1, num_classes=10, input_size=(28, 28)).eval()
    x = torch.zeros(1, 1, 28, 28)
    inv = inventory(model, x)
    space = make_target_space(
        SearchSpace.from_inventory(inv, round_to=round_to, bits=[32]), model, x, inv, None
    )
    base = count_macs(model, x)
    rng = random.Random(0)
    met = 0
    targets = (
        space.targets[::2] if net == "resnet18" else space.targets
    )  # real pruning costs seconds
    for target in targets:
        for draw in range(3 if net != "resnet18" else 2):
            alloc = {d: rng.uniform(-1, 1) if draw else 0.0 for d in space.dims()}
            params = space.candidate_params({f"alloc:{d}": a for d, a in alloc.items()}, target)
            if params is None:  # allowed: the ranges or rounding cannot reach the window
                continue
            real = count_macs(compress(model, space.decode(params), x), x) / base
            assert target * (1 - TOLERANCE) - 1e-9 <= real <= target + 1e-9, (
                net,
                target,
                alloc,
                real,
            )
            met += 1
    assert met >= 2 * len(targets), f"only {met} candidates met their target"


def test_default_targets_span_the_space_lightest_first():
    assert default_targets(0.003, 1.0) == [0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005]
    assert default_targets(0.003, 0.09)[0] == pytest.approx(0.09 * (1 - TOLERANCE / 2), abs=1e-4)
    assert default_targets(0.3, 0.35) == [pytest.approx(0.35 * (1 - TOLERANCE / 2), abs=1e-4)]
    assert default_targets(0.7, 0.8) == [
        pytest.approx((0.7 * 0.8) ** 0.5)
    ]  # nothing between: the middle


@pytest.mark.parametrize("value", ["0", "1.5", "abc", "0.5,0.5", "-0.1", "nan"])
def test_bad_targets_are_one_line_exit_2(isolated, capsys, value):
    try:
        code = main(search_args("bad", 2, "--targets", value))
    except SystemExit as exc:  # argparse's own one-line error (a value that is no number)
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "target" in err, err
    assert not (isolated / "mlruns").exists()


def test_targets_with_another_strategy_or_outside_the_space_are_one_line(isolated, capsys):
    assert main(search_args("bad", 2, "--targets", "0.1", "--strategy", "uniform")) == 2
    assert "--strategy targets" in capsys.readouterr().err
    assert main(search_args("bad", 2, "--targets", "0.5", "--ratio-min", "0.9")) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "outside what the space allows" in errors[0], errors


TINY = dict(
    model="tiny_cnn",
    dataset="digits",
    base_epochs=2,
    epochs=1,
    subset=200,
    fps_repeats=3,
    threads=1,
    objectives=["accuracy", "macs"],
    bits=[32],
    candidates=3,
)


@pytest.mark.slow
def test_baselines_at_every_target_then_searched_candidates_proxy_logged(isolated):
    """Two targets, 7 trials: uniform and global at both first, then searched candidates (the
    cheaper target first); every full trial has its proxy score (the baselines' from the
    candidate study of their target, searched at trials 5 and 6); the per-target table, the
    proxy's Spearman and the vs-uniform metrics reach the MLflow parent run."""
    cfg = SearchSettings.from_flat(**TINY, study="tg", trials=7, targets=[0.4, 0.15])
    result = run_search(cfg, listeners=[MlflowTracker()])
    study = load_existing(cfg.stores.storage_url, "tg")
    full = [t for t in study.trials if t.state.name == "COMPLETE"]
    kinds = [
        (t.user_attrs["target"], t.user_attrs["candidate"])
        for t in sorted(full, key=lambda t: t.number)
    ]
    assert kinds[:4] == [(0.4, "uniform"), (0.15, "uniform"), (0.4, "global"), (0.15, "global")], (
        kinds
    )
    assert kinds[4] == (0.15, "search") and {k for _, k in kinds[4:]} == {"search"}, kinds
    base = result.base_metrics["macs"]
    for t in full:
        target = t.user_attrs["target"]
        macs = t.user_attrs["record"]["metrics"]["macs"]
        assert macs <= target * base + 1, (target, macs / base)
        if not t.user_attrs.get(
            "below_tolerance"
        ):  # a baseline whose channels are too coarse for the window
            assert target * (1 - TOLERANCE) * base - 1 <= macs, (target, macs / base)
        assert proxy_of(t, study.user_attrs) is not None, t.user_attrs
    assert all(
        not t.user_attrs.get("below_tolerance")
        for t in full
        if t.user_attrs["candidate"] == "search"
    )
    rows = target_rows(study)
    assert [r["target"] for r in rows] == [0.4, 0.15]
    assert all(r["best"] >= r["uniform"] for r in rows)
    assert "proxy rank quality" in targets_text(study)
    mlflow.set_tracking_uri(f"sqlite:///{isolated / 'mlruns' / 'mlflow.db'}")
    parent = [
        r
        for r in mlflow.search_runs(experiment_names=["tg"], output_format="list")
        if r.data.tags.get("prunetune.role") == "search"
    ][0]
    assert {"best.t0.4", "uniform.t0.15", "vs_uniform.t0.15"} <= set(parent.data.metrics)
    assert "proxy_spearman" in parent.data.metrics  # 0.15 has uniform, global and >= 1 searched


def test_baselines_start_at_once_and_are_scored_with_their_targets_candidates(
    isolated, monkeypatch
):
    """Issue 23: the first full trial (uniform at the lightest target) is planned without any
    proxy scoring (it used to wait ~2.5 s for one). The baselines' proxies are scored first when
    their target is searched: anchors of its candidate study, kept on the full study, never
    promoted; a global ranking's allocation outside the sampler's range is no warning."""
    cfg = SearchSettings.from_flat(**TINY, study="quick", trials=6, targets=[0.4, 0.15])
    setup = prepare_search(cfg, weights_dir=weights_dir(cfg.study_name))
    study = open_study(cfg, setup.space, setup.base_metrics)
    planner, scored = TargetPlanner(setup, study), []
    real = targets.screen_trial
    monkeypatch.setattr(targets, "screen_trial", lambda *a: scored.append(a) or real(*a))
    assert planner.refill(Deadline(None)) and scored == []
    assert [(t.user_attrs["target"], t.user_attrs["candidate"]) for t in study.trials] == [
        (0.4, "uniform")
    ]
    dims = list(planner.space.dims())  # a global ranking that prunes one group far harder
    planner._global[0.15] = {d: 0.9 if d == dims[0] else 0.0 for d in dims}
    assert max(abs(a) for a in planner.space.allocation_of(planner._global[0.15]).values()) > 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        params, attrs = planner._searched(0.15, Deadline(None))
    assert not [w for w in caught if "out of range" in str(w.message)]  # it is meant to be
    candidates = planner.candidate_study(0.15).trials
    assert [t.user_attrs.get("baseline") for t in candidates[:2]] == ["uniform", "global"]
    assert len(scored) == len(candidates) == 2 + TINY["candidates"]
    assert {"proxy.uniform.t0.15", "proxy.global.t0.15"} <= set(study.user_attrs)
    assert attrs["screened_from"] >= 2 and attrs["proxy"] is not None


def test_two_searches_sharing_a_study_never_plan_one_baseline_twice(isolated):
    """Two planners on one study (two processes sharing it): while the first scores the uniform
    baseline at 0.4, the second plans that same step and its process takes the trial. The first
    then drops its copy and plans the next step: each (target, baseline) is one full trial.
    Before the fix both enqueued it (two processes ran every baseline twice)."""
    cfg = SearchSettings.from_flat(**TINY, study="two", trials=6, targets=[0.4, 0.15])
    setup = prepare_search(cfg, weights_dir=weights_dir(cfg.study_name))
    study = open_study(cfg, setup.space, setup.base_metrics)
    first, second = TargetPlanner(setup, study), TargetPlanner(setup, study)
    score, raced = first._baseline, []

    def scored_while_the_other_plans(target: float, kind: str):
        proposal = score(target, kind)
        if not raced:
            raced.append(second.refill(Deadline(None)))
            study.ask()  # the other process takes the trial it planned
        return proposal

    first._baseline = scored_while_the_other_plans
    assert first.refill(Deadline(None)) and raced == [True]
    planned = [(t.user_attrs["target"], t.user_attrs["candidate"]) for t in study.trials]
    assert planned == [(0.4, "uniform"), (0.15, "uniform")], planned


@pytest.mark.slow
def test_the_default_search_is_targets_and_prints_the_table(isolated, capsys):
    assert SearchSettings().plan.strategy == "targets"
    assert (
        main(
            search_args(
                "dflt", 4, "--objectives", "accuracy,macs", "--bits", "32", "--candidates", "2"
            )
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "vs uniform" in out and "default pick" in out, out
