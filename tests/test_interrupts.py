"""Ctrl-C and SIGTERM inside a command (prunetune.interrupts), with real signals sent to this
process: raised where the command is, remembered for check(), held back by deferred()."""

from __future__ import annotations

import os
import signal
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
    assert interrupts.received() is None
    interrupts.check()  # outside: never raises


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
