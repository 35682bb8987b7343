"""Local store locations (SQLite URLs, folders): made absolute, checked before anything is written."""
from __future__ import annotations

import os
from pathlib import Path

from prunetune.errors import PrunetuneError

SQLITE = "sqlite:///"


def absolute_sqlite(url: str) -> str:
    """`sqlite:///rel/x.db` -> `sqlite:////abs/rel/x.db` (MLflow caches stores by URL and Ray
    workers run in other folders); other URLs unchanged."""
    if url.startswith(SQLITE):
        return SQLITE + str(Path(url.removeprefix(SQLITE)).resolve())
    return url


def check_writable_folder(folder: Path, what: str) -> None:
    """Raise one clear PrunetuneError when `folder` cannot be created or written, creating nothing:
    the nearest existing ancestor must be a writable directory."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise PrunetuneError(f"{what} folder {str(folder)!r} cannot be created: {str(probe)!r} is a file")
    if not os.access(probe, os.W_OK):
        raise PrunetuneError(f"{what} folder {str(folder)!r} is not writable")


def prepare_sqlite(url: str, what: str, *, create: bool) -> str:
    """The absolute URL; for SQLite, check (and with `create`, make) the database's folder."""
    url = absolute_sqlite(url)
    if url.startswith(SQLITE):
        folder = Path(url.removeprefix(SQLITE)).parent
        check_writable_folder(folder, what)
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
