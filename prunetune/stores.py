"""What a store URL may be, and whether the store behind it is what it claims, checked before
anything is written to it (nothing here writes or creates anything).

Two kinds of store: the Optuna study storage (`--storage`, an SQLAlchemy database URL) and the
MLflow tracking store (`--tracking-uri`: a database URL or an http(s) server). A database is
recognised by its tables: any of Optuna's (`studies`, `trials`, ...) or MLflow's (`experiments`,
`runs`, ...).
One that holds the other tool's tables, or other tables only, is refused with one line: the other
tool would create its tables inside it. A missing SQLite file, or an empty one, is a new store.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from prunetune.errors import PrunetuneError
from prunetune.redact import mask_url, scrub

DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")
TRACKING_SCHEMES = (*DATABASE_SCHEMES, "http", "https", "databricks")
# each tool's own tables (alembic_version is both's): any one of them says whose a database is,
# also while its creator is still making the others (another search creating the storage)
TABLES = {
    "optuna": {
        "studies",
        "version_info",
        "trials",
        "study_directions",
        "trial_values",
        "trial_params",
        "study_user_attributes",
        "trial_user_attributes",
    },
    "mlflow": {
        "experiments",
        "runs",
        "metrics",
        "params",
        "tags",
        "latest_metrics",
        "experiment_tags",
        "registered_models",
        "model_versions",
    },
}
NAMES = {"optuna": "an Optuna study storage", "mlflow": "an MLflow tracking database"}
FLAGS = {"optuna": "--storage", "mlflow": "--tracking-uri"}
CONNECT_TIMEOUT_S = 5


def scheme(url: str) -> str:
    """`postgresql+psycopg://...` -> "postgresql"; "" for a plain path."""
    return url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""


def sqlite_path(url: str) -> Path | None:
    """The database file of a `sqlite:///PATH` URL, as written (a relative path stays relative;
    no query); None for another scheme or an in-memory database. With `sqlite_url` and
    `absolute_sqlite`, the one place that takes a SQLite URL apart or puts one together."""
    if scheme(url) != "sqlite":
        return None
    path = url.split("://", 1)[1][1:].split("?", 1)[0]
    return Path(path) if path not in ("", ":memory:") else None


def sqlite_url(path: str | Path) -> str:
    """The `sqlite:///PATH` URL of the database file `path` (`sqlite:////abs/x.db` when it is
    absolute)."""
    return f"sqlite:///{path}"


def absolute_sqlite(url: str) -> str:
    """`sqlite:///rel/x.db` -> `sqlite:////abs/rel/x.db` (MLflow caches stores by URL and Ray
    workers run in other folders), driver and query kept; other URLs unchanged."""
    path = sqlite_path(url)
    if path is None:
        return url
    query = url.partition("?")[2]
    return f"{url.split('://', 1)[0]}:///{path.resolve()}" + (f"?{query}" if query else "")


def check_scheme(url: str, kind: str) -> None:
    """PrunetuneError, one line, unless `url` is a supported, persistent store of `kind` ("optuna":
    a database; "mlflow": a database or a server; never `file:` or a plain folder, never an
    in-memory SQLite database, which would be gone when the command ends)."""
    allowed = DATABASE_SCHEMES if kind == "optuna" else TRACKING_SCHEMES
    what = "study storage" if kind == "optuna" else "tracking URI"
    if scheme(url) not in allowed:
        hint = (
            "sqlite:///PATH or a database URL (postgresql://, mysql://)"
            if kind == "optuna"
            else "sqlite:///PATH, a database URL or an http(s):// MLflow server"
        )
        got = f"scheme {scheme(url)!r}" if scheme(url) else "a plain path"
        raise PrunetuneError(f"{what} {mask_url(url)!r} is not supported ({got}); use {hint}")
    path = url.split("://", 1)[1].split("?", 1)[0]
    if scheme(url) == "sqlite" and (path in ("", "/", "/:memory:") or "mode=memory" in url):
        raise PrunetuneError(
            f"{what} {url!r} is an in-memory database: everything written to it "
            f"would "
            f"be gone when the command ends; use sqlite:///PATH"
        )


def tables(url: str) -> set[str] | None:
    """The table names of the database at `url`, read without writing (but see _sqlite_tables);
    None when it does not exist yet (a missing or empty SQLite file). PrunetuneError, one line,
    when it cannot be read."""
    path = sqlite_path(url)
    if path is not None:
        if not path.is_file() or path.stat().st_size == 0:
            return None
        return _sqlite_tables(path)
    return _server_tables(url)


def _sqlite_tables(path: Path) -> set[str]:
    """Table names of the SQLite file `path`, read through a read-only connection. A transaction
    that a killed process (kill -9) left half-written beside it (a hot journal) is first rolled
    back through a read-write one: SQLite's own recovery, which the next writer does anyway and
    which a read-only connection cannot do ("attempt to write a readonly database")."""
    try:
        try:
            return _read_tables(path, "ro")
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_READONLY_ROLLBACK:
                raise
            return _read_tables(path, "rw")
    except sqlite3.Error as exc:
        raise PrunetuneError(f"{str(path)!r} cannot be read as a SQLite database: {exc}") from None


def _read_tables(path: Path, mode: str) -> set[str]:
    con = sqlite3.connect(f"file:{quote(str(path))}?mode={mode}", uri=True, timeout=30)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        con.close()


def _server_tables(url: str) -> set[str]:
    """Table names of a database server's database (SQLAlchemy; connecting writes nothing)."""
    import sqlalchemy

    timed = scheme(url) in ("postgresql", "mysql", "mariadb")
    args = {"connect_timeout": CONNECT_TIMEOUT_S} if timed else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=args)
        try:
            with engine.connect() as con:
                return set(sqlalchemy.inspect(con).get_table_names())
        finally:
            engine.dispose()
    except Exception as exc:  # driver missing, server down, bad credentials: one line
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise PrunetuneError(
            f"cannot open database {mask_url(url)!r}: {type(exc).__name__}: {scrub(first, url)}"
        ) from None


def check_kind(url: str, kind: str) -> bool:
    """Whether the database at `url` is an existing store of `kind` (False: a new one, nothing in
    it yet). PrunetuneError, one line, when it holds the other tool's tables or other tables."""
    names = tables(url)
    if not names or names <= {"alembic_version"}:
        return False
    if TABLES[kind] & names:
        return True
    other = next((k for k in TABLES if k != kind and TABLES[k] & names), None)
    what = f"is {NAMES[other]}" if other else f"holds other tables ({', '.join(sorted(names)[:4])})"
    raise PrunetuneError(
        f"{FLAGS[kind]} {mask_url(url)!r} {what}, not {NAMES[kind]}: nothing was "
        f"written to it; pass another {FLAGS[kind]}"
    )


def check_writable_file(path: Path, what: str) -> None:
    """PrunetuneError, one line, when the existing file `path` is read-only: no write permission
    for anyone (chmod a-w: refused for root too, who could write anyway), or it cannot be opened
    for writing (immutable, a read-only mount): a resume would fail at its first write."""
    import os
    import stat

    if not path.is_file():
        return
    if not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise PrunetuneError(
            f"{what} {str(path)!r} is read-only (mode "
            f"{path.stat().st_mode & 0o777:o}): "
            "make it writable, or pass another --storage"
        )
    try:
        os.close(os.open(path, os.O_RDWR))
    except OSError as exc:
        raise PrunetuneError(f"{what} {str(path)!r} is not writable ({exc.strerror})") from None
