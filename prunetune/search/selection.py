"""Selection rules: `max fps where accuracy >= 0.97` picks one point (a trial's metrics) of
several. `parse_rule` reads the text into a `Rule`, `select` applies it. Pure functions."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prunetune.errors import ConfigError
from prunetune.search.objectives import Point

__all__ = ["Condition", "Rule", "parse_rule", "select"]

_GRAMMAR = (
    "(max|min) METRIC [where METRIC OP NUMBER (and METRIC OP NUMBER)*], OP one of >= <= > < =="
)
_KEYWORDS = ("max", "min", "where", "and")
_TOKEN = re.compile(
    r"(?P<op>>=|<=|==|>|<)"
    r"|(?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<word>[A-Za-z_][\w.]*)"
)
_OPS = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
}


@dataclass(frozen=True)
class Condition:
    """``metric op value``; a point satisfies it when it has the metric and the comparison holds.

    ``==`` compares exactly (use a ``>=`` and ``<=`` pair for a tolerance).
    """

    metric: str
    op: Literal[">=", "<=", ">", "<", "=="]
    value: float

    def holds(self, point: Point) -> bool:
        """Whether ``point`` satisfies the condition (False if it lacks the metric or it is NaN)."""
        return self.metric in point and _OPS[self.op](_rule_number(point, self.metric), self.value)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value!r}"


@dataclass(frozen=True)
class Rule:
    """Pick the point with the largest (``goal="max"``) or smallest ``metric`` among those that
    satisfy every condition. ``str(rule)`` is its canonical text, which :func:`parse_rule` reads.
    """

    goal: Literal["max", "min"]
    metric: str
    conditions: tuple[Condition, ...] = ()

    def __str__(self) -> str:
        text = f"{self.goal} {self.metric}"
        if self.conditions:
            text += " where " + " and ".join(str(c) for c in self.conditions)
        return text


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, position) tokens; ConfigError at the first character that starts none."""
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return tokens
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ConfigError(
                f"bad rule {text!r}: unexpected {text[pos]!r} at position {pos}; "
                f"grammar: {_GRAMMAR}"
            )
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(), pos))
        pos = match.end()


def parse_rule(text: str) -> Rule:
    """Parse ``(max|min) METRIC [where COND (and COND)*]``, COND = ``METRIC OP NUMBER``.

    OP is one of ``>= <= > < ==``; keywords are case-insensitive and cannot be metric names,
    whitespace is optional around operators (``accuracy>=0.97``), NUMBER may use an exponent
    (``1e6``). Metric names are not checked here (that needs the points: see :func:`select`).
    Raises ConfigError naming the position of the first problem and the grammar.
    """
    tokens = _tokens(text)
    pos = 0
    grammar = f"grammar: {_GRAMMAR}"

    def take(kind: str, expected: str, keywords: tuple[str, ...] = ()) -> str:
        """Consume the next token: of ``kind``, one of ``keywords`` if given, else no keyword.

        Keywords come back lower-cased, anything else as written.
        """
        nonlocal pos
        if pos == len(tokens):
            raise ConfigError(f"bad rule {text!r}: expected {expected}, found the end; {grammar}")
        token_kind, token, at = tokens[pos]
        word = token.lower()
        if token_kind != kind or (word not in keywords if keywords else word in _KEYWORDS):
            raise ConfigError(
                f"bad rule {text!r}: expected {expected}, found {token!r} at position {at}; "
                f"{grammar}"
            )
        pos += 1
        return word if keywords else token

    goal = take("word", "'max' or 'min'", ("max", "min"))
    metric = take("word", "a metric name")
    conditions: list[Condition] = []
    if pos < len(tokens):
        take("word", "'where' or the end", ("where",))
        while True:
            name = take("word", "a metric name")
            op = take("op", "a comparison (>=, <=, >, <, ==)")
            value = float(take("number", "a number"))
            conditions.append(Condition(name, op, value))  # type: ignore[arg-type]
            if pos == len(tokens):
                break
            take("word", "'and' or the end", ("and",))
    return Rule(goal, metric, tuple(conditions))  # type: ignore[arg-type]


def _rule_number(point: Point, key: str) -> float:
    """``point[key]`` as a float (NaN allowed: it satisfies no comparison and never wins)."""
    try:
        return float(point[key])
    except (TypeError, ValueError):
        raise ConfigError(f"metric {key!r} is not a number: {point[key]!r}") from None


def select(points: Sequence[Point], rule: Rule | str) -> int:
    """Index of the point ``rule`` picks (a string is parsed with :func:`parse_rule`).

    Candidates are the points that satisfy every condition and have a non-NaN value of the
    rule's metric; among them the largest (max) or smallest (min) value wins, ties going to the
    lowest index. Raises ConfigError when the rule is malformed, names a metric no point has,
    compares a non-numeric value, there are no points, or no point satisfies the rule.
    """
    if isinstance(rule, str):
        rule = parse_rule(rule)
    if not points:
        raise ConfigError(f"rule {str(rule)!r}: there are no points to select from")
    known = set().union(*(p.keys() for p in points))
    missing = sorted({rule.metric, *(c.metric for c in rule.conditions)} - known)
    if missing:
        raise ConfigError(
            f"rule {str(rule)!r}: unknown metric {', '.join(map(repr, missing))}; "
            f"known: {', '.join(sorted(known))}"
        )
    best: int | None = None
    best_value = math.nan
    sign = 1.0 if rule.goal == "max" else -1.0
    for i, point in enumerate(points):
        if rule.metric not in point or not all(c.holds(point) for c in rule.conditions):
            continue
        value = sign * _rule_number(point, rule.metric)
        if not math.isnan(value) and (best is None or value > best_value):
            best, best_value = i, value
    if best is None:
        passing = ", ".join(f"{c}: {sum(c.holds(p) for p in points)} pass" for c in rule.conditions)
        raise ConfigError(
            f"no point satisfies rule {str(rule)!r} ({len(points)} points"
            + (f"; {passing})" if passing else f" without a number for {rule.metric!r})")
        )
    return best
