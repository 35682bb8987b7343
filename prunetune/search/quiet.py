"""A machine-wide reader/writer lock that keeps timing honest under parallel trials.

Fine-tuning holds the lock *shared* (many trials may train at once); an FPS measurement holds it
*exclusive*, so it runs only when no trial on this machine is training, and no trial starts
training while it runs. A gate lock makes it fair: a waiting measurement blocks new training.
Built on flock(2) of files in the user's lock folder (prunetune.paths.lock_dir), so it works
across processes (Ray workers) and needs no server; each machine of a cluster has its own.

One lock per user and machine, not per study: a measurement must not overlap *any* of this
user's trials on the machine, whatever study or store they belong to. Other users' processes are
not held back (their lock files live in their own folders: a shared, world-writable lock file
would let any user block or break everyone's searches).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from prunetune.paths import lock_dir, open_lock_file


class QuietLock:
    """`with lock.busy():` around training, `with lock.quiet():` around measurement. Every
    QuietLock of one user on one machine is the same lock (its files are in `lock_dir()`)."""

    def __init__(self) -> None:
        folder = lock_dir()
        self.gate_path, self.lock_path = folder / "quiet.gate", folder / "quiet.lock"

    @contextlib.contextmanager
    def _flock(self, path: Path, mode: int) -> Iterator[None]:
        fd = open_lock_file(path.name)
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
            fd = open_lock_file(self.lock_path.name)
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
