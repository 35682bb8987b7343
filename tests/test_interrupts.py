"""Ctrl-C and SIGTERM inside a command (prunetune.interrupts), with real signals sent to this
process: raised where the command is, remembered for check(), held back by deferred()."""

from __future__ import annotations

import os
import signal
import sys
import threading

import pytest

from prunetune import interrupts


def _send(sig: signal.Signals) -> None:
    """`sig` to this process: its handler runs in the main thread right after os.kill returns."""
    os.kill(os.getpid(), sig)


def test_a_signal_raises_keyboard_interrupt_and_is_remembered_until_the_block_ends():
    with interrupts.handle_interrupts():
        with pytest.raises(KeyboardInterrupt):
            _send(signal.SIGTERM)
        assert interrupts.received() is signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # a loop's check() raises it again
            interrupts.check()
    assert interrupts.received() is signal.SIGTERM  # kept for the caller's exit code
    interrupts.check()  # outside: never raises
    with interrupts.handle_interrupts():
        assert interrupts.received() is None  # the next command starts afresh


def test_the_previous_handlers_come_back():
    before = signal.getsignal(signal.SIGINT)
    with interrupts.handle_interrupts(), interrupts.handle_interrupts():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before


def test_a_deferred_signal_is_raised_when_the_block_ends():
    done = []
    with interrupts.handle_interrupts():
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                _send(signal.SIGINT)
                done.append("the writes that belong together")
        assert done and interrupts.received() is signal.SIGINT


def test_a_deferred_block_left_by_an_exception_raises_that_exception():
    with interrupts.handle_interrupts():
        with pytest.raises(ValueError):
            with interrupts.deferred():
                _send(signal.SIGINT)
                raise ValueError("already leaving")
        with interrupts.deferred():  # nothing held over from the block before
            pass


def test_off_the_main_thread_it_is_a_no_op():
    seen = []

    def worker() -> None:
        with interrupts.handle_interrupts():
            seen.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert seen == [before]


def _handlers() -> dict:
    return {s: signal.getsignal(s) for s in interrupts.SIGNALS}


def _sigterm_while_restoring(monkeypatch, before: dict) -> list:
    """From now on, the first time one of the `before` handlers is put back (a handle_interrupts
    block ending), SIGTERM arrives right after; the returned list records that it was sent."""
    real, sent = signal.signal, []

    def restoring(sig, handler):
        old = real(sig, handler)
        if not sent and handler is before.get(sig):
            sent.append(sig)
            _send(signal.SIGTERM)
        return old

    monkeypatch.setattr(signal, "signal", restoring)
    return sent


def test_a_signal_while_the_handlers_are_restored_is_raised_once_they_are(monkeypatch):
    """SIGTERM just as a command ends (the handlers half restored) used to raise KeyboardInterrupt
    from inside the restoring: it escaped `prunetune`'s main (exit -2 with a traceback, seen in
    tests/test_signals.py) and left SIGTERM on prunetune's handler. Now: raised as the block ends,
    the previous handlers back, the signal remembered for the exit code."""
    before = _handlers()
    with pytest.raises(KeyboardInterrupt):
        with interrupts.handle_interrupts():
            sent = _sigterm_while_restoring(monkeypatch, before)
    monkeypatch.undo()
    assert sent and interrupts.received() is signal.SIGTERM
    assert _handlers() == before


def test_main_exits_143_when_sigterm_lands_as_the_command_ends(monkeypatch, capsys):
    """The same race through `prunetune` itself: one line, exit 128 + 15, no traceback."""
    from prunetune.cli import app

    before = _handlers()

    def models(args) -> int:
        _sigterm_while_restoring(monkeypatch, before)
        return 0

    help_text, flags, _ = app.COMMANDS["models"]
    monkeypatch.setitem(app.COMMANDS, "models", (help_text, flags, models))
    try:
        rc = app.main(["models"])
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped main")
    finally:
        monkeypatch.undo()
    assert rc == 143 and "interrupted (SIGTERM)" in capsys.readouterr().err


def _signal_landing_in(code_name: str) -> list:
    """From now on (until sys.settrace(None)), the first frame of prunetune.interrupts' function
    `code_name` that starts gets SIGTERM on its first bytecode: the installed handler is called
    with that frame, as Python calls it when a signal lands there. The list records it."""
    fired: list = []

    def tracer(frame, event, arg):
        code = frame.f_code
        if event == "call" and not fired and code.co_name == code_name:
            if code.co_filename == interrupts.__file__:
                fired.append(code_name)
                signal.getsignal(signal.SIGTERM)(signal.SIGTERM, frame)
        return None

    sys.settrace(tracer)
    return fired


@pytest.mark.parametrize("where", ["__exit__", "_restore"])
def test_a_signal_on_the_first_bytecode_of_the_ending_is_raised_once_the_handlers_are_back(where):
    """The last gap: a signal in the few bytecodes before the restoring began was raised there,
    the handlers left on prunetune's and the nesting count off by one. Now any bytecode of the
    ending records it, and it is raised once the previous handlers are back."""
    before = _handlers()
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts.handle_interrupts():
                fired = _signal_landing_in(where)
    finally:
        sys.settrace(None)
    assert fired == [where] and interrupts.received() is signal.SIGTERM
    assert _handlers() == before
    interrupts.check()  # outside every block again: never raises


def test_main_exits_143_when_a_library_swallowed_the_signal(monkeypatch, capsys):
    """CI, test_signals: SIGTERM landed in a weakref callback while a search scored its front;
    Python printed "Exception ignored" and dropped the KeyboardInterrupt, and the command exited
    0. A signal seen inside the command now ends it as interrupted even so."""
    from prunetune.cli import app

    def models(args) -> int:
        try:
            _send(signal.SIGTERM)
        except KeyboardInterrupt:
            pass  # what "Exception ignored in: <function WeakValueDictionary...remove>" does
        return 0

    help_text, flags, _ = app.COMMANDS["models"]
    monkeypatch.setitem(app.COMMANDS, "models", (help_text, flags, models))
    assert app.main(["models"]) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == "prunetune: interrupted (SIGTERM)"
