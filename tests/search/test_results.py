"""From a study to a result (prunetune.search.results) on in-memory Optuna studies: front, knee,
constraints, test accuracy, the hypervolume history on the base's scale, the Pareto table's rows,
CSV and JSON, and `trials_dataframe`. The module is pure report code: it imports no torch."""

from __future__ import annotations

import re

import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prunetune.search.records import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    REJECTED,
    RUNNING,
    record_from_trial,
)
from prunetune.search.results import (
    csv_text,
    feasible,
    front_rows,
    selected,
    summarize,
    table_rows,
    trials_dataframe,
    write_front,
)
from tests.search.studies import BASE, add, new_study, params, record

# (accuracy, flops) of the complete trials; trial 2 is dominated by trial 0.
# BASE: 0.9 at 1000 FLOPs.
POINTS = {0: (0.8, 500), 1: (0.6, 250), 2: (0.7, 600), 6: (0.85, 900)}
OTHERS = {3: FAILED, 4: REJECTED, 5: RUNNING}


def study_of(
    *,
    constraints: dict | None = None,
    base: dict | None = BASE,
    test_accuracy: dict | None = None,
    extra: dict | None = None,
):
    """Trials 0-6: POINTS complete (with a measured fps and speedup), OTHERS in their states."""
    study = new_study(constraints=constraints, base=base)
    for n in range(7):
        if n in POINTS:
            acc, flops = POINTS[n]
            rec = record(n, accuracy=acc, flops=flops, fps=90.0 * (n + 1), speedup=float(n + 1))
            rec.metrics.update(extra or {})
            add(study, rec)
        else:
            add(study, record(n, OTHERS[n]))
    if test_accuracy is not None:
        study.set_user_attr("test_accuracy", test_accuracy)
    return study


def test_the_front_is_the_non_dominated_complete_trials_and_the_knee_is_balanced():
    result = summarize(study_of())
    assert result.front == [0, 1, 6]
    # rescaled to the front's range (accuracy 0.6..0.85, flops 250..900), trial 0 is nearest the
    # ideal
    assert result.knee == 0
    assert result.front_records() == [result.record(0), result.record(1), result.record(6)]
    assert result.counts() == {COMPLETE: 4, FAILED: 1, REJECTED: 1, RUNNING: 1}
    assert [r.number for r in result.records] == list(range(7))
    assert result.objectives == ["accuracy", "flops"] and result.base_metrics == BASE


@pytest.mark.parametrize(
    "constraints, front",
    [
        ({"min_accuracy": 0.75}, [0, 6]),
        ({"max_flops": 550}, [0, 1]),
        ({"min_accuracy": 0.75, "max_flops": 550}, [0]),
        ({"min_accuracy": 0.95}, []),
    ],
)
def test_constraints_keep_infeasible_trials_off_the_front(constraints, front):
    result = summarize(study_of(constraints=constraints))
    assert result.front == front
    assert result.knee == (front[0] if front else None)
    assert result.constraints == {"min_accuracy": None, "max_flops": None, **constraints}


def test_only_complete_trials_are_feasible():
    for state in (FAILED, REJECTED, RUNNING, INTERRUPTED):
        assert not feasible(record(0, state), {})
    assert feasible(record(0, accuracy=0.5, flops=10), {"min_accuracy": 0.5, "max_flops": 10})
    assert not feasible(record(0, accuracy=0.5, flops=11), {"max_flops": 10})


def test_test_accuracy_is_stored_once_and_reported_with_the_scored_trials():
    """The study's `test_accuracy` attr is the one place: summarize leaves every record as stored
    (it used to write test accuracy into the records' metrics too), the reports add it."""
    study = study_of(test_accuracy={"0": 0.79, "6": 0.84})
    result = summarize(study)
    assert result.test_accuracy == {0: 0.79, 6: 0.84}
    assert result.records == [record_from_trial(t) for t in study.get_trials()]
    assert not any("test_accuracy" in r.metrics for r in result.records)
    assert "test_accuracy" not in study.get_trials()[0].user_attrs["record"]["metrics"]
    assert [result.metrics_of(r).get("test_accuracy") for r in result.records] == [
        0.79,
        None,
        None,
        None,
        None,
        None,
        0.84,
    ]
    assert result.metrics_of(result.record(0)) == {
        **result.record(0).metrics,
        "test_accuracy": 0.79,
    }
    rows = {row["trial"]: row["test_accuracy"] for row in front_rows(result)}
    assert rows == {0: 0.79, 1: None, 6: 0.84}
    df = trials_dataframe(result)
    assert list(df["test_accuracy"].fillna(-1)) == [0.79, -1, -1, -1, -1, -1, 0.84]
    assert selected(result, "max test_accuracy").number == 6


def test_the_table_starts_with_the_base_model_and_summarises_configs():
    rows = table_rows(summarize(study_of()))
    assert rows[0] == {
        "trial": "base",
        "accuracy": 0.9,
        "test_accuracy": None,
        "macs": 500,
        "flops": 1000,
        "fps": 100.0,
        "speedup": None,
        "params": 2000,
        "size_bytes": 8000,
        "bitops": None,
        "knee": False,
        "pick": False,
        "config": "uncompressed",
        "load_1m": None,
        "under_load": False,
    }
    assert [r["trial"] for r in rows[1:]] == [6, 0, 1]
    assert rows[1]["config"] == "ratios[0.50 0.50] bits[8]"


def test_csv_and_json_of_the_front(tmp_path):
    result = summarize(study_of(test_accuracy={"0": 0.79}))
    table = list(csv.DictReader(io.StringIO(csv_text(result))))
    assert list(table[0]) == [
        "trial",
        "accuracy",
        "test_accuracy",
        "macs",
        "flops",
        "fps",
        "speedup",
        "params",
        "size_bytes",
        "bitops",
        "knee",
        "config",
    ]
    assert [(r["trial"], r["knee"], r["test_accuracy"]) for r in table] == [
        ("base", "False", ""),
        ("6", "False", ""),
        ("0", "True", "0.79"),
        ("1", "False", ""),
    ]
    paths = write_front(result, tmp_path / "out")
    assert json.loads(paths["json"].read_text()) == front_rows(result)
    assert paths["csv"].read_bytes().decode() == csv_text(result)  # CRLF rows, as csv writes them


def test_trials_dataframe_has_one_row_per_trial_in_optunas_convention():
    df = trials_dataframe(summarize(study_of(test_accuracy={"0": 0.79})))
    assert list(df["number"]) == list(range(7))
    assert list(df["state"]) == [COMPLETE, COMPLETE, COMPLETE, FAILED, REJECTED, RUNNING, COMPLETE]
    assert list(df.columns) == [
        "number",
        "state",
        *(f"params_{k}" for k in sorted(params())),
        "accuracy",
        "test_accuracy",
        "macs",
        "flops",
        "fps",
        "speedup",
        "compress_s",
        "finetune_s",
        "measure_s",
        "total_s",
        "front",
        "knee",
        "reason",
    ]
    assert list(df["params_ratio:0"]) == [0.5] * 7
    assert df["accuracy"].tolist()[:3] == [0.8, 0.6, 0.7] and df["accuracy"][6] == 0.85
    assert df["accuracy"][3:6].isna().all()  # failed, rejected, running: no metrics
    assert df["test_accuracy"][0] == 0.79 and df["test_accuracy"].isna().sum() == 6
    assert df["front"].dtype == bool and list(df.index[df["front"]]) == [0, 1, 6]
    assert df["knee"].dtype == bool and list(df.index[df["knee"]]) == [0]
    assert df["total_s"][0] == 1.8 and df["reason"][3] == "failed: why" and df["reason"][0] == ""


def test_trials_dataframe_has_a_column_for_each_metric_a_record_has():
    """User-defined metrics (an eval_fn's "map") are columns too; one named like a fixed column
    does not overwrite it."""
    df = trials_dataframe(
        summarize(study_of(extra={"map": 0.5, "state": 3.0, "params_ratio:0": 7.0}))
    )
    assert df["map"].tolist()[:3] == [0.5, 0.5, 0.5] and math.isnan(df["map"][3])
    assert df["metric_state"][0] == 3.0 and df["state"][0] == COMPLETE
    assert df["metric_params_ratio:0"][0] == 7.0 and df["params_ratio:0"][0] == 0.5
    assert list(df.columns).index("map") > list(df.columns).index("speedup")


def test_trials_dataframe_of_an_empty_study_has_the_fixed_columns():
    df = trials_dataframe(summarize(new_study()))
    assert len(df) == 0 and list(df.columns) == ["number", "state", "front", "knee", "reason"]


def test_results_and_records_import_no_torch():
    """The report layer stays importable (and `prunetune pareto` fast) without torch; pandas only
    when a data frame is asked for."""
    code = (
        "import sys; import prunetune.search.results as r, tests.search.studies as s;"
        "assert 'pandas' not in sys.modules, 'pandas at import';"
        "r.trials_dataframe(r.summarize(s.new_study()));"
        "bad = [m for m in ('torch', 'torchvision', 'mlflow', 'ray') if m in sys.modules]; "
        "assert not bad, bad"
    )
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_fps_measured_under_load_is_flagged_in_the_table():
    """A front member whose FPS was timed while other processes held every CPU (2 runnable
    besides the measurement's 1 thread on 2 CPUs) is marked '!', and a note says the speedup is
    the figure to trust; members timed with a CPU to spare, and older records without a reading,
    are not."""
    from prunetune.search.api import pareto_text

    study = new_study(base={**BASE, "threads": 1, "cpus": 2, "load_1m": 0.4, "runnable": 0})
    loads = [
        {"load_1m": 3.2, "runnable": 2, "cpus": 2},
        {"load_1m": 1.9, "runnable": 1, "cpus": 2},
        {},
    ]
    for n, ((acc, flops), load) in enumerate(zip([(0.8, 500), (0.6, 250), (0.85, 900)], loads)):
        rec = record(n, accuracy=acc, flops=flops, fps=90.0, speedup=2.0)
        rec.context.update(load)
        add(study, rec)
    result = summarize(study)
    flagged = {row["trial"]: row["under_load"] for row in table_rows(result)}
    assert flagged == {"base": False, 0: True, 1: False, 2: False}
    text = pareto_text(result)
    assert re.search(r"^\s*0\*?k?!", text, re.M), text  # * default pick, k knee, ! under load
    assert (
        "speedup, timed side by side with the base in the same window, is the figure to trust"
        in text
    )
    assert "load at measurement: 3.2" in text
    quiet = new_study(base={**BASE, "threads": 1, "cpus": 2, "runnable": 0})
    add(quiet, record(0, accuracy=0.8, flops=500))
    assert "figure to trust" not in pareto_text(summarize(quiet))


def test_the_base_models_metrics_and_run_context_are_apart():
    """The study stores the base model's reference as one mapping ("base_metrics": metrics, a
    Python API search's user metrics and the run context, as written by every prunetune so far);
    the result keeps the context apart, so no report reads a thread count as a metric or one of
    the base's metrics as its context."""
    from prunetune.search.api import pareto_text

    context = {"runtime": "torch", "threads": 2, "device": "cpu", "load_1m": 0.4, "cpus": 2}
    study = new_study(base={**BASE, "confidence": 0.7, **context, "train_step_ms_1t": 9.5})
    add(study, record(0, accuracy=0.8, flops=500))
    result = summarize(study)
    assert result.base_metrics == {**BASE, "confidence": 0.7}
    assert result.base_context == {**context, "train_step_ms_1t": 9.5}
    assert table_rows(result)[0]["load_1m"] == 0.4
    assert "FPS: batch 1, 2 thread(s), runtime torch, median" in pareto_text(result)
