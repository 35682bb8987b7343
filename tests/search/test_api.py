"""The CLI's search front end (prunetune.search.api): warnings before a search (threads, a
selection rule that picks nothing), rule metrics checked before any trial, the Pareto text."""

from __future__ import annotations

import os

import pytest

from prunetune.errors import ConfigError
from prunetune.search.api import (
    check_rule_metrics,
    pareto_text,
    selection_warning,
    threads_warning,
)
from prunetune.search.results import summarize
from prunetune.search.selection import parse_rule
from tests.search.studies import BASE, add, new_study, record


def test_more_threads_than_cores_is_warned_about():
    cores = len(os.sched_getaffinity(0))
    assert threads_warning(cores) is None and threads_warning(1) is None
    warning = threads_warning(cores + 1)
    assert warning.startswith(f"warning: --threads {cores + 1} is more than the {cores} CPU core")


def test_a_rule_may_name_only_metrics_trials_record():
    check_rule_metrics(parse_rule("max fps where accuracy >= 0.9 and size_bytes < 1e6"))
    with pytest.raises(ConfigError, match="unknown metric 'acc', 'latency'; known: accuracy"):
        check_rule_metrics(parse_rule("max latency where acc >= 0.9"))


def _result(base: dict = BASE):
    study = new_study(base=base)
    add(study, record(0, accuracy=0.85, flops=400, fps=150.0, speedup=1.5))
    add(study, record(1, accuracy=0.80, flops=200, fps=300.0, speedup=3.0))
    return summarize(study)


def test_a_rule_that_picks_nothing_is_one_warning():
    result = _result()
    assert selection_warning(result, None) is None
    assert selection_warning(result, "max fps where accuracy >= 0.8") is None
    warning = selection_warning(result, "max fps where accuracy >= 0.99")
    assert warning.startswith("warning: --select picks nothing") and "\n" not in warning


def test_the_pareto_text_lists_the_base_and_the_front_with_the_measurement_context():
    text = pareto_text(_result({**BASE, "threads": 2, "runtime": "onnxruntime"}))
    lines = text.splitlines()
    assert lines[0].startswith("Pareto front of study 'unit': 2 of 2 complete trials")
    # the base first, then the front: trial 0 the default pick (*) and knee (k)
    assert [line.split()[0] for line in lines[3:6]] == ["base", "0*k", "1"]
    assert "FPS: batch 1, 2 thread(s), runtime onnxruntime, median" in text
