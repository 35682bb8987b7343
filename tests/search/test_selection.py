"""Selection rules (search/selection.py): `max fps where accuracy >= 0.97` parsed and applied to
hand-made points."""

from __future__ import annotations

import math

import pytest

from prunetune.errors import ConfigError
from prunetune.search.selection import Condition, Rule, parse_rule, select


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max fps", Rule("max", "fps")),
        ("min flops", Rule("min", "flops")),
        (
            "max fps where accuracy >= 0.97",
            Rule("max", "fps", (Condition("accuracy", ">=", 0.97),)),
        ),
        (
            "  MAX   fps WHERE accuracy>=0.97 ",
            Rule("max", "fps", (Condition("accuracy", ">=", 0.97),)),
        ),
        (
            "min size_bytes where test_accuracy>.9 and flops<=1e6",
            Rule(
                "min",
                "size_bytes",
                (Condition("test_accuracy", ">", 0.9), Condition("flops", "<=", 1e6)),
            ),
        ),
        (
            "max accuracy where params==1000",
            Rule("max", "accuracy", (Condition("params", "==", 1000.0),)),
        ),
        ("max accuracy where fps<-5", Rule("max", "accuracy", (Condition("fps", "<", -5.0),))),
    ],
)
def test_parse_rule(text: str, expected: Rule) -> None:
    rule = parse_rule(text)
    assert rule == expected
    assert parse_rule(str(rule)) == rule


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected 'max' or 'min', found the end"),
        ("fps", "expected 'max' or 'min', found 'fps' at position 0"),
        ("maximise fps", "expected 'max' or 'min'"),
        ("max", "expected a metric name, found the end"),
        ("max where", "expected a metric name, found 'where'"),
        ("max fps accuracy >= 0.9", "expected 'where' or the end, found 'accuracy' at position 8"),
        ("max fps where", "expected a metric name, found the end"),
        ("max fps where accuracy", "expected a comparison"),
        ("max fps where accuracy >=", "expected a number, found the end"),
        ("max fps where accuracy >= high", "expected a number, found 'high'"),
        ("max fps where accuracy = 0.9", "unexpected '=' at position 23"),
        ("max fps where accuracy ~ 0.9", "unexpected '~'"),
        ("max fps where accuracy >= 0.9 or fps > 1", "expected 'and' or the end, found 'or'"),
        ("max fps where accuracy >= 0.9 and", "expected a metric name, found the end"),
        ("max fps where accuracy >= 0.9 0.8", "expected 'and' or the end, found '0.8'"),
    ],
)
def test_parse_rule_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="bad rule") as info:
        parse_rule(text)
    assert message in str(info.value)
    assert "grammar" in str(info.value)


TRIALS = [
    {"accuracy": 0.99, "fps": 1000.0, "flops": 9e6, "params": 5000},
    {"accuracy": 0.975, "fps": 3000.0, "flops": 4e6, "params": 2000},
    {"accuracy": 0.97, "fps": 5000.0, "flops": 2e6, "params": 1000},
    {"accuracy": 0.96, "fps": 9000.0, "flops": 1e6, "params": 1000},
    {"accuracy": 0.97, "fps": 5000.0, "flops": 3e6, "params": 1500},  # ties trial 2 on fps
]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("max fps", 3),
        ("max accuracy", 0),
        ("max fps where accuracy >= 0.97", 2),  # 2 and 4 tie: lowest index
        ("max fps where accuracy > 0.97", 1),
        ("max fps where accuracy >= 0.97 and flops >= 2.5e6", 4),
        ("min flops where accuracy>=0.97 and params<=1500", 2),
        ("max accuracy where params == 1000", 2),
        ("min params where fps == 3000", 1),
    ],
)
def test_select(rule: str, expected: int) -> None:
    assert select(TRIALS, rule) == expected
    assert select(TRIALS, parse_rule(rule)) == expected


def test_select_equality_is_exact() -> None:
    points = [{"accuracy": 0.99, "params": 1000.5}, {"accuracy": 0.9, "params": 1000}]
    assert select(points, "max accuracy where params == 1000") == 1


def test_select_skips_points_without_the_metric() -> None:
    points = [
        {"accuracy": 0.99},
        {"accuracy": 0.9, "fps": 10.0},
        {"accuracy": 0.98, "fps": math.nan},
    ]
    assert select(points, "max fps") == 1
    assert select(points, "max accuracy where fps > 5") == 1


def test_select_no_match_explains_why() -> None:
    with pytest.raises(ConfigError) as info:
        select(TRIALS, "max fps where accuracy >= 0.995 and flops <= 2e6")
    message = str(info.value)
    assert "no point satisfies" in message and "5 points" in message
    assert "accuracy >= 0.995: 0 pass" in message and "flops <= 2000000.0: 2 pass" in message


def test_select_errors() -> None:
    known = "known: accuracy, flops, fps, params"
    with pytest.raises(ConfigError, match=f"unknown metric 'latency'.*{known}"):
        select(TRIALS, "min latency where accuracy >= 0.9")
    with pytest.raises(ConfigError, match="unknown metric 'acc'"):
        select(TRIALS, "max fps where acc >= 0.9")
    with pytest.raises(ConfigError, match="no points"):
        select([], "max fps")
    with pytest.raises(ConfigError, match="bad rule"):
        select(TRIALS, "biggest fps")
    with pytest.raises(ConfigError, match="not a number"):
        select([{"fps": 1.0, "status": "ok"}], "max fps where status >= 1")
