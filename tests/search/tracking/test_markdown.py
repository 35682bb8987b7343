"""The front as the MLflow parent run shows it (prunetune.search.tracking.markdown): the table's
columns, base first, and the run description."""

from __future__ import annotations

import pytest

from prunetune.search.results import summarize
from prunetune.search.tracking.markdown import front_note, front_table
from tests.search.studies import add, new_study, record


@pytest.fixture
def result():
    study = new_study()
    add(study, record(0, accuracy=0.85, flops=400, fps=150.0, speedup=1.5))
    add(study, record(1, accuracy=0.80, flops=200, fps=300.0, speedup=3.0))
    study.set_user_attr("test_accuracy", {"0": 0.84})
    return summarize(study)


def test_the_table_has_the_base_first_then_the_front(result):
    table = front_table(result)
    assert table["trial"] == ["base", "0", "1"]
    assert table["test_accuracy"] == [None, 0.84, None]  # the study's, for the scored member
    assert table["knee"] == [False, True, False] and len(table["config"]) == 3


def test_the_description_shows_the_plot_and_the_table(result):
    note = front_note(result, "run123")
    assert "get-artifact?path=pareto_front.png&run_uuid=run123" in note
    rows = [line for line in note.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| trial | accuracy | test_accuracy")
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["base", "0*", "1"]
    assert "| 84.0% |" in rows[2]
