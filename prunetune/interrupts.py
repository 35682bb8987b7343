"""Ctrl-C and SIGTERM that a command never loses.

`prunetune` (cli.main) runs every command inside `handle_interrupts()`: SIGINT and SIGTERM raise
KeyboardInterrupt wherever the command is (base training, the trial loop, the end-of-search work,
an export), so `finally` blocks and context managers run (temporary folders are removed, the
MLflow parent run is ended KILLED) and the command exits 130 (SIGINT) or 143 (SIGTERM) with one
line. `received()` says which signal it was.

Python runs a signal handler at the next bytecode of the main thread. When that bytecode belongs
to a `__del__` method or a weakref callback (library clean-up code, run whenever garbage is
collected), the KeyboardInterrupt the handler raises is printed as "Exception ignored" and
dropped, and a search would run on. So the handlers also remember the signal, and long loops call
`check()`, which raises KeyboardInterrupt again once a signal was seen. Outside
`handle_interrupts()` (and off the main thread) `check()` never raises.

`deferred()` holds a signal back for the few writes that must happen together (ending a run):
it is raised when the block ends. A signal that arrives while `handle_interrupts()` installs or
restores the handlers (from the first bytecode of its exit on: the handler knows by the frame it
lands in) is raised once they are in place, as KeyboardInterrupt out of the block when it ends
(the caller's outer `except KeyboardInterrupt` still exits 128 + signal), never from inside the
changing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_seen: signal.Signals | None = None
_depth = 0  # nesting of handle_interrupts()
_deferring = 0  # nesting of deferred()
_held = False  # a signal arrived inside deferred()
_changing = False  # handle_interrupts() is restoring the previous handlers
_late = False  # a signal arrived while a handle_interrupts() block was entered or left


def _handler(signum: int, frame) -> None:
    global _seen, _held, _late
    _seen = signal.Signals(signum)
    if _changing or (frame is not None and frame.f_code in _CHANGING):
        _late = True  # raised once the handlers are in place (see InterruptScope)
        return
    if _deferring:
        _held = True
        return
    raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class InterruptScope:
    """The context manager `handle_interrupts()` returns. A signal that arrives while it installs
    or restores the handlers (`_handler` knows by the frame it lands in, from the first bytecode
    on, and by `_changing` in whatever the restoring calls) is not raised there, where it would
    leave them half changed, but once they are in place: at the next `check()` inside the block,
    or as KeyboardInterrupt out of it once the previous handlers are back."""

    def __init__(self) -> None:
        self.old: dict | None = None

    def __enter__(self) -> None:
        global _seen, _depth, _late
        if not _main_thread():
            return
        if _depth == 0:
            _seen, _late = None, False
        self.old = {s: signal.signal(s, _handler) for s in SIGNALS}
        _depth += 1

    def __exit__(self, kind, exc, tb) -> bool:
        global _changing, _late
        old, self.old = self.old, None
        if old is None:
            return False
        _changing = True
        try:
            _restore(old)
        finally:
            _changing = False
        late, _late = _late, False
        if late and kind is None:
            raise KeyboardInterrupt
        return False


def handle_interrupts() -> InterruptScope:
    """Within: SIGINT and SIGTERM raise KeyboardInterrupt and are remembered for `check()` and
    `received()`. Nests (an inner use re-installs the handlers after a library replaced them, as
    ray.init does); the previous handlers are restored on exit (a signal meanwhile:
    KeyboardInterrupt once they are), and the outermost entry forgets an earlier signal. A no-op
    off the main thread."""
    return InterruptScope()


def _restore(old: dict) -> None:
    """Put `old` handlers back and leave one level. The outermost level keeps the signal for
    `received()` until the next entry."""
    global _depth
    for s, h in old.items():
        signal.signal(s, h)
    _depth -= 1


# code during whose frames a signal is recorded, not raised: the handlers are being changed
_CHANGING = frozenset(
    {InterruptScope.__enter__.__code__, InterruptScope.__exit__.__code__, _restore.__code__}
)


def check() -> None:
    """Raise KeyboardInterrupt if SIGINT or SIGTERM arrived inside `handle_interrupts()`."""
    if _depth and _seen is not None:
        raise KeyboardInterrupt


def received() -> signal.Signals | None:
    """The last SIGINT or SIGTERM that arrived inside the current (or, after it, the last)
    `handle_interrupts()`, or None."""
    return _seen


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within: a SIGINT or SIGTERM is remembered but not raised; KeyboardInterrupt is raised when
    the (outermost) block ends, unless an exception is already leaving it."""
    global _deferring, _held
    _deferring += 1
    try:
        yield
    except BaseException:
        _deferring -= 1
        _held = _held and _deferring > 0
        raise
    _deferring -= 1
    if not _deferring and _held:
        _held = False
        raise KeyboardInterrupt
