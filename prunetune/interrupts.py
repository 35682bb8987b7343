"""Ctrl-C and SIGTERM that a search never loses.

Python runs a signal handler at the next bytecode of the main thread. When that bytecode belongs
to a `__del__` method or a weakref callback (library clean-up code, run whenever garbage is
collected), the KeyboardInterrupt the handler raises is printed as "Exception ignored" and
dropped, and a search would run on. So `handle_interrupts()` installs handlers that also remember
the signal, and long loops call `check()`, which raises KeyboardInterrupt again once a signal was
seen. Outside `handle_interrupts()` (and off the main thread) `check()` never raises.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_seen: signal.Signals | None = None


def _handler(signum: int, frame) -> None:  # noqa: ARG001
    global _seen
    _seen = signal.Signals(signum)
    raise KeyboardInterrupt


@contextlib.contextmanager
def handle_interrupts() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise KeyboardInterrupt and are remembered for `check()`.
    The previous handlers are restored on exit. A no-op off the main thread."""
    global _seen
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _seen = None
    old = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _seen = None


def check() -> None:
    """Raise KeyboardInterrupt if SIGINT or SIGTERM arrived inside `handle_interrupts()`."""
    if _seen is not None:
        raise KeyboardInterrupt
