"""`--strategy uniform|global|sensitivity`: baselines on the search's own trial pipeline (same
trials, study and MLflow logging), selectable, recorded with the study, bad values rejected."""

from __future__ import annotations

import mlflow
import pytest

from prunetune.cli import main
from prunetune.compress import kept_channels
from prunetune.config import SearchSettings
from prunetune.errors import ConfigError
from prunetune.search.optuna_runner import run_search
from prunetune.search.screening import screen_stats
from prunetune.search.strategies import make_space
from prunetune.search.tracking import MlflowTracker
from tests.helpers import load_study, search_args

TINY = dict(
    model="tiny_cnn",
    dataset="digits",
    base_epochs=2,
    epochs=1,
    subset=100,
    fps_repeats=3,
    threads=1,
)


def test_unknown_strategy_is_one_line_exit_2(isolated, capsys):
    assert main(search_args("s", 2, "--strategy", "magic")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown strategy 'magic'" in err, err
    assert not (isolated / "mlruns").exists()


def _space(low: float, high: float, step: float):
    from prunetune.spaces import GroupSpec, SearchSpace

    return SearchSpace(
        groups={"a": GroupSpec(8, 0.5, low, high), "b": GroupSpec(8, 0.5, low, high)},
        quant_layers=[],
        ratio_step=step,
    )


def _runs(isolated, study: str):
    mlflow.set_tracking_uri(f"sqlite:///{isolated / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=[study], output_format="list")
    parents = [r for r in runs if r.data.tags.get("prunetune.role") == "search"]
    return parents, [r for r in runs if r.data.tags.get("prunetune.role") == "trial"]


@pytest.mark.slow
def test_uniform_sweeps_each_ratio_once_then_stops(isolated):
    # grid 0.1, 0.2, 0.3: a budget of 20 trials still runs each ratio exactly once
    cfg = SearchSettings.from_flat(
        **TINY, study="uni", trials=20, strategy="uniform", ratio_max=0.3, ratio_step=0.1
    )
    assert make_space(
        SearchSettings.from_flat(strategy="uniform", ratio_min=0.6, ratio_max=0.8, ratio_step=0.1),
        _space(0.6, 0.8, 0.1),
        None,
        None,
        None,
    ).grid == [0.6, 0.7, 0.8]
    run_search(cfg, listeners=[MlflowTracker()])
    study = load_study(isolated, "uni")
    targets = sorted(t.params["target:uniform"] for t in study.trials)
    assert targets == pytest.approx([0.1, 0.2, 0.3]) and all(
        t.state.name == "COMPLETE" for t in study.trials
    )
    for t in study.trials:  # one ratio for every group, float weights
        rec = t.user_attrs["record"]["config"]
        assert list(rec["ratios"].values()) == pytest.approx(
            [t.params["target:uniform"]] * len(rec["ratios"])
        )
        assert set(rec["bits"].values()) == {32}
    assert study.user_attrs["strategy"] == "uniform" and screen_stats(study) is None
    parents, children = _runs(isolated, "uni")
    assert [p.data.tags["strategy"] for p in parents] == ["uniform"] and len(children) == 3
    assert sum(c.data.tags["pareto"] == "true" for c in children) >= 1
    run_search(cfg)  # resumed: the sweep is done, nothing new
    assert len(load_study(isolated, "uni").trials) == 3
    with pytest.raises(ConfigError, match="created with --strategy uniform, not global"):
        run_search(
            SearchSettings.from_flat(
                **TINY, study="uni", trials=2, strategy="global", ratio_max=0.3, ratio_step=0.1
            )
        )


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["global", "sensitivity"])
def test_ranking_strategies_run_through_the_trial_pipeline(isolated, strategy):
    cfg = SearchSettings.from_flat(**TINY, study=strategy, trials=2, strategy=strategy, seed=1)
    result = run_search(cfg, listeners=[MlflowTracker()])
    study = load_study(isolated, strategy)
    assert study.user_attrs["strategy"] == strategy and len(result.records) == 2
    assert all(r.state == "complete" and "fps" in r.metrics for r in result.records)
    groups = study.user_attrs["space"]["groups"]
    for r in result.records:
        target = r.params[f"target:{strategy}"]
        ratios = r.config["ratios"]
        assert set(ratios) == set(groups) and any(v > 0 for v in ratios.values()), (target, ratios)
        if strategy == "sensitivity":  # less sensitive groups pruned more, around the target
            assert min(ratios.values()) <= target + 1e-6 or max(ratios.values()) == 0.95
    parents, children = _runs(isolated, strategy)
    assert parents[0].data.tags["strategy"] == strategy and len(children) == 2


def test_global_ratios_follow_torch_pruning_global_ranking():
    """On random weights (no ties) torch-pruning's global ranking removes the target share of all
    channels, unevenly across groups, and more at a larger target."""
    import torch

    from prunetune.compress import inventory
    from prunetune.models import build_for
    from prunetune.search.strategies import global_ratios
    from prunetune.spaces import SearchSpace

    torch.manual_seed(0)
    model, example = build_for("tiny_cnn", (1, 8, 8), 10), torch.zeros(1, 1, 8, 8)
    space = SearchSpace.from_inventory(inventory(model, example))
    total = sum(g.channels for g in space.groups.values())
    removed = {}
    for target in (0.3, 0.6):
        ratios = global_ratios(model, example, space, target)
        removed[target] = sum(
            space.groups[n].channels - kept_channels(space.groups[n].channels, r)
            for n, r in ratios.items()
        )
        assert abs(removed[target] / total - target) <= 1 / total + 1e-9, (target, ratios)
    assert removed[0.6] > removed[0.3]
    assert len(set(global_ratios(model, example, space, 0.6).values())) > 1  # not a uniform ratio
