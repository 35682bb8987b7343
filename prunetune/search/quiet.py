"""A machine-wide reader/writer lock that keeps timing honest under parallel trials.

Fine-tuning holds the lock *shared* (many trials may train at once); an FPS measurement holds it
*exclusive*, so it runs only when no trial on this machine is training, and no trial starts
training while it runs. A gate lock makes it fair: a waiting measurement blocks new training.
Built on flock(2) of files in the temp directory, so it works across processes (Ray workers)
and needs no server; each machine of a cluster has its own.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


class QuietLock:
    """`with lock.busy():` around training, `with lock.quiet():` around measurement."""

    def __init__(self, name: str, directory: str | Path | None = None) -> None:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        d = Path(directory or tempfile.gettempdir())
        self.gate_path, self.lock_path = d / f"prunetune-{safe}.gate", d / f"prunetune-{safe}.lock"

    @contextlib.contextmanager
    def _flock(self, path: Path, mode: int) -> Iterator[None]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Shared: training may overlap other training, never a measurement."""
        with self._flock(self.gate_path, fcntl.LOCK_EX):
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Exclusive: waits for running training to end and holds new training back."""
        with self._flock(self.gate_path, fcntl.LOCK_EX), self._flock(self.lock_path, fcntl.LOCK_EX):
            yield
