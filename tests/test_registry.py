"""The name -> factory registry (prunetune.registry)."""

from __future__ import annotations

import pytest

from prunetune.errors import UnknownNameError
from prunetune.registry import Registry


def test_factories_register_under_their_own_or_a_given_name():
    shapes: Registry = Registry("shape")

    @shapes.register()
    def square() -> str:
        return "square"

    @shapes.register("round")
    def circle() -> str:
        return "circle"

    assert shapes.get("square") is square and shapes.get("round")() == "circle"
    assert shapes.names() == ["round", "square"]
    assert "round" in shapes and "circle" not in shapes


def test_an_unknown_name_lists_the_known_and_a_second_registration_is_refused():
    shapes: Registry = Registry("shape")
    shapes.register("b")(len)
    shapes.register("a")(len)
    with pytest.raises(UnknownNameError, match="unknown shape 'c'; known: a, b"):
        shapes.get("c")
    with pytest.raises(ValueError, match="shape 'a' registered twice"):
        shapes.register("a")(str)
