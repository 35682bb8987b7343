"""Local store locations (SQLite URLs, folders): made absolute, checked before anything is
written. Taking SQLite URLs apart is `prunetune.stores`' job (`sqlite_path`, `absolute_sqlite`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prunetune.errors import PrunetuneError
from prunetune.stores import absolute_sqlite, sqlite_path


def check_writable_folder(folder: Path, what: str) -> None:
    """Raise one clear PrunetuneError when `folder` cannot be created or written, creating nothing:
    the nearest existing ancestor must be a writable directory."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise PrunetuneError(
            f"{what} folder {str(folder)!r} cannot be created: {str(probe)!r} is a file"
        )
    if not os.access(probe, os.W_OK):
        raise PrunetuneError(f"{what} folder {str(folder)!r} is not writable")


def prepare_sqlite(url: str, what: str, *, create: bool) -> str:
    """The absolute URL; for SQLite, check (`probe_writable` too) and with `create` make the
    database's folder, and check that an existing database file is one (`check_sqlite_file`)."""
    url = absolute_sqlite(url)
    path = sqlite_path(url)
    if path is not None:
        folder = path.parent
        check_writable_folder(folder, what)
        probe_writable(folder, what)
        check_sqlite_file(path, what)
        if create:
            folder.mkdir(parents=True, exist_ok=True)
    return url


STORE = Path("mlruns")  # the store of the working directory (README: "Where results go")


def inside(root: Path, *parts: str) -> Path:
    """`root / parts`, resolved (symbolic links followed), and PrunetuneError unless it stays
    under `root` resolved: no part may lead out of the store."""
    base = root.resolve()
    path = base.joinpath(*parts).resolve()
    if not path.is_relative_to(base):
        raise PrunetuneError(f"refusing to write {str(path)!r}: it is outside {str(base)!r}")
    return path


def study_dir(study_name: str) -> Path:
    """mlruns/prunetune/<study> (absolute), checked to stay under mlruns/prunetune."""
    from prunetune.names import check_study_name

    return inside(STORE / "prunetune", check_study_name(study_name))


def weights_dir(study_name: str) -> Path:
    """Where a study's trial weights live: mlruns/prunetune/<study>/weights (next to the MLflow
    store), absolute so the records stay valid from any working directory (a Ray worker's too);
    PrunetuneError if it would lead out of mlruns/prunetune (see `inside`). The one place that
    says where trial weights go."""
    return inside(study_dir(study_name), "weights")


SQLITE_MAGIC = b"SQLite format 3\x00"


def probe_writable(folder: Path, what: str) -> None:
    """PrunetuneError unless a file can be created in `folder` (when missing, in its nearest
    existing ancestor), tried with an unnamed temporary file that leaves nothing behind: os.access
    cannot tell for root, /proc or a read-only mount."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise PrunetuneError(
            f"{what} folder {str(folder)!r} is not writable ({exc.strerror})"
        ) from None


def check_sqlite_file(path: Path, what: str) -> None:
    """Raise one clear PrunetuneError when `path` exists but is not a SQLite database (a file of
    other bytes, a folder): opening it would fail deep inside the database library. A missing or
    empty file passes (SQLite creates it)."""
    if not path.exists():
        return
    if not path.is_file():
        raise PrunetuneError(f"{what} file {str(path)!r} is not a file")
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise PrunetuneError(f"cannot read {what} file {str(path)!r}: {exc.strerror}") from None
    if head and head != SQLITE_MAGIC:
        raise PrunetuneError(
            f"{what} file {str(path)!r} is not a SQLite database (another file is in its place)"
        )


def home_dir() -> Path:
    """Where caches and lock files live: $PRUNETUNE_HOME, else ~/.cache/prunetune."""
    return Path(os.environ.get("PRUNETUNE_HOME") or Path.home() / ".cache" / "prunetune")


def check_home() -> Path:
    """home_dir(), checked before anything is trained or written: PrunetuneError, one line, when
    it is a file, lies under one, or cannot be created or written (creates nothing)."""
    home = home_dir()
    if home.exists() and not home.is_dir():
        raise PrunetuneError(
            f"PRUNETUNE_HOME {str(home)!r} is a file, not a folder: set "
            f"PRUNETUNE_HOME "
            "to a writable folder"
        )
    try:
        check_writable_folder(home, "PRUNETUNE_HOME")
        probe_writable(home, "PRUNETUNE_HOME")
    except PrunetuneError as exc:
        raise PrunetuneError(f"{exc}: set PRUNETUNE_HOME to a writable folder") from None
    return home


def lock_dir() -> Path:
    """The folder of this user's lock files (created, mode 0700): $XDG_RUNTIME_DIR/prunetune when
    that variable names a writable folder, else $PRUNETUNE_HOME/locks (default
    ~/.cache/prunetune/locks). Never shared with other users."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir() and os.access(runtime, os.W_OK | os.X_OK):
        return Path(runtime) / "prunetune"
    return home_dir() / "locks"


def open_lock_file(name: str) -> int:
    """A file descriptor (read-write) of the lock file `name` in `lock_dir()`, both created when
    missing. PrunetuneError, one line, when the folder cannot be created or written."""
    folder = lock_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise PrunetuneError(
            f"cannot create lock files in {str(folder)!r} ({exc.strerror}): set "
            "PRUNETUNE_HOME to a writable folder"
        ) from None


@contextlib.contextmanager
def file_lock(name: str) -> Iterator[None]:
    """An exclusive flock(2) of the lock file `name` in `lock_dir()`: one holder at a time among
    this user's processes on this machine."""
    fd = open_lock_file(name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
