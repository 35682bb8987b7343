"""The machine-wide reader/writer lock (prunetune.search.quiet): training shares it, a measurement
waits for training to end and holds new training back."""

from __future__ import annotations

import threading
import time

import pytest

from prunetune.search.quiet import QuietLock


@pytest.fixture(autouse=True)
def own_lock_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))


def _in_thread(fn) -> threading.Thread:
    thread = threading.Thread(target=fn)
    thread.start()
    return thread


def test_training_shares_the_lock():
    entered = threading.Event()

    def train() -> None:
        with QuietLock().busy():
            entered.set()

    with QuietLock().busy():
        thread = _in_thread(train)
        assert entered.wait(10)  # a second trainer got in while the first holds it
    thread.join(10)


def test_a_measurement_waits_for_training_and_holds_new_training_back():
    events: list[str] = []
    measuring = threading.Event()

    def measure() -> None:
        with QuietLock().quiet():
            events.append("measure")
            measuring.set()
            time.sleep(0.3)
            events.append("measured")

    def train() -> None:
        with QuietLock().busy():
            events.append("train")

    with QuietLock().busy():
        measurement = _in_thread(measure)
        time.sleep(0.3)
        events.append("trained")
    assert measuring.wait(10)
    training = _in_thread(train)  # asks while the measurement runs: waits for its end
    measurement.join(10)
    training.join(10)
    assert events == ["trained", "measure", "measured", "train"]
