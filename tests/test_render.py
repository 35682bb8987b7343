"""Plain-text rendering (prunetune.render): number formats and the aligned table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunetune.render import fmt_pct, human, table, to_json


@pytest.mark.parametrize(
    "n, unit, shown",
    [
        (None, "", "-"),
        (999, "", "999"),
        (1234, "", "1.23k"),
        (1234567, "B", "1.23MB"),
        (-2.5e9, "", "-2.5G"),
        (0.123456, "", "0.1235"),
    ],
)
def test_human_numbers(n, unit, shown):
    assert human(n, unit) == shown


def test_percentages():
    assert fmt_pct(0.9876) == "98.8%" and fmt_pct(None) == "-"


def test_a_table_formats_known_metrics_and_aligns_numbers_right_text_left():
    rows = [
        {"trial": 1, "accuracy": 0.9, "macs": 1_500_000, "speedup": 2.04, "config": "a"},
        {"trial": 12, "accuracy": None, "macs": 20, "speedup": None, "config": {"x": 1}},
    ]
    text = table(rows, ["trial", "accuracy", "macs", "speedup", "config"], headers={"macs": "M"})
    assert text.splitlines() == [
        "trial  accuracy     M  speedup  config",
        "-----  --------  ----  -------  --------",
        "    1     90.0%  1.5M     2.0x  a",
        '   12  -           20  -        {"x": 1}',
    ]


def test_json_renders_what_json_cannot_as_text():
    assert json.loads(to_json({"path": Path("/x"), "n": 1})) == {
        "path": "/x",
        "n": 1,
    }
