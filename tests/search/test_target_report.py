"""The `targets` strategy's report (prunetune.search.target_report) on in-memory studies: rows per
target against the baselines, the MLflow metrics, the proxy's Spearman by hand."""

from __future__ import annotations

import optuna
import pytest

from prunetune.search.target_report import (
    baseline_proxy_key,
    proxy_of,
    proxy_quality,
    spearman,
    target_metrics,
    target_rows,
    targets_text,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(trials: list[tuple[float, str, float, float]]) -> optuna.Study:
    """Full trials (target, candidate kind, validation accuracy, proxy score)."""
    study = optuna.create_study(directions=["maximize"])
    for target, kind, accuracy, proxy in trials:
        attrs = {"target": target, "candidate": kind, "proxy": proxy}
        attrs["record"] = {"metrics": {"accuracy": accuracy}}
        study.add_trial(optuna.trial.create_trial(value=accuracy, user_attrs=attrs))
    return study


TRIALS = [
    (0.4, "uniform", 0.80, 0.50),
    (0.2, "uniform", 0.60, 0.30),
    (0.4, "global", 0.82, 0.55),
    (0.2, "search", 0.70, 0.40),
    (0.2, "search", 0.65, 0.35),
]


def test_spearman_by_hand():
    assert spearman([(1, 10), (2, 20), (3, 30)]) == pytest.approx(1.0)
    assert spearman([(1, 30), (2, 20), (3, 10)]) == pytest.approx(-1.0)
    # ranks with a tie: x 0, 1.5, 1.5, 3 against y 0, 1, 2, 3: 4.5 / sqrt(4.5 x 5)
    assert spearman([(1, 1), (2, 2), (2, 3), (4, 4)]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)
    assert spearman([(1, 5), (2, 5), (3, 5)]) is None


def test_rows_per_target_lightest_first_against_uniform():
    rows = target_rows(_study(TRIALS))
    assert [(r["target"], r["uniform"], r["global"], r["search"], r["best"]) for r in rows] == [
        (0.4, 0.80, 0.82, None, 0.82),
        (0.2, 0.60, None, 0.70, 0.70),
    ]
    assert [r["best_trial"] for r in rows] == [2, 3]
    assert [r["vs_uniform"] for r in rows] == pytest.approx([0.02, 0.10])
    assert target_rows(optuna.create_study()) == [] and targets_text(optuna.create_study()) is None


def test_the_proxy_is_measured_where_a_target_has_three_trials():
    assert proxy_quality(_study(TRIALS)) == {"proxy_spearman": pytest.approx(1.0), "proxy_pairs": 3}
    assert proxy_quality(_study(TRIALS[:4])) is None
    text = targets_text(_study(TRIALS[:4]))
    assert "too few configs per target" in text and "+2.0 pt" in text
    assert "(added)" not in text


def test_a_target_added_where_the_front_dropped_is_marked():
    study = _study(TRIALS)
    study.set_user_attr("refined_targets", [0.2])
    lines = targets_text(study).splitlines()
    assert lines[2].strip().startswith("40.00%") and lines[3].strip().startswith("(added) 20.00%")
    assert "(added): a target added where the front dropped steeply" in lines[-1]


def test_the_parent_runs_metrics():
    metrics = target_metrics(_study(TRIALS))
    assert metrics["best.t0.4"] == 0.82 and metrics["vs_uniform.t0.2"] == pytest.approx(0.10)
    assert "global.t0.2" not in metrics and metrics["proxy_pairs"] == 3


def test_a_baselines_proxy_is_read_from_the_study():
    """Baselines' full trials carry no proxy of their own: their scores sit in the study's user
    attrs (scored with the target's candidates), and the Spearman uses them."""
    bare = optuna.create_study(directions=["maximize"])
    for t in _study(TRIALS).trials:
        if t.user_attrs["candidate"] != "search":
            del t.user_attrs["proxy"]
        bare.add_trial(t)
    assert proxy_quality(bare) is None  # 0.2 has one searched proxy and no baseline's
    bare.set_user_attr(baseline_proxy_key("uniform", 0.2), 0.30)
    assert proxy_quality(bare) == {"proxy_spearman": pytest.approx(1.0), "proxy_pairs": 3}
    assert (
        proxy_of(bare.trials[1], bare.user_attrs) == 0.30
        and baseline_proxy_key("global", 0.4) == "proxy.global.t0.4"
    )
