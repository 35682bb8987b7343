"""A tiny name -> factory registry shared by models, datasets, importance criteria and samplers."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from prunetune.errors import UnknownNameError

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Maps names to factory functions; `get` raises UnknownNameError listing the known names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, F] = {}

    def register(self, name: str | None = None) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            key = name or fn.__name__
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} registered twice")
            self._items[key] = fn
            return fn

        return deco

    def get(self, name: str) -> F:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._items)) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
