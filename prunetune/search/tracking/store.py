"""The MLflow tracking store: which URI (`requested_uri`, `tracking_uri`), checked before a search
writes anything (`check_store`: a reachable server, a complete SQLite store in a writable folder)
and made ready (`prepare_store`: a missing SQLite store created completely or not at all, in
write-ahead-log mode: one fsync per commit, and the UI's reads never block a search's writes)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
from pathlib import Path

from prunetune.errors import PrunetuneError, disk_full
from prunetune.redact import mask_url, scrub
from prunetune.stores import (
    absolute_sqlite,
    check_kind,
    check_scheme,
    scheme,
    sqlite_path,
    sqlite_url,
)

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"


def requested_uri(uri: str | None) -> str:
    """The tracking URI asked for: `uri`, else $MLFLOW_TRACKING_URI, else DEFAULT_URI (nothing
    resolved, checked or created)."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def tracking_uri(uri: str | None) -> str:
    """The tracking URI to use: `uri`, else $MLFLOW_TRACKING_URI, else DEFAULT_URI. A SQLite URI is
    made absolute and its folder created; PrunetuneError if the folder cannot be created or
    written."""
    uri = requested_uri(uri)
    db = sqlite_path(uri)
    if db is not None:  # made absolute: MLflow caches stores by URI, Ray workers chdir
        uri = absolute_sqlite(uri)
        folder = db.resolve().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PrunetuneError(
                f"cannot create tracking folder {str(folder)!r}: {exc.strerror}"
            ) from None
        if not os.access(folder, os.W_OK):
            raise PrunetuneError(f"tracking folder {str(folder)!r} is not writable")
    return uri


def _use_wal(db: Path) -> None:
    """Put the SQLite file `db` (created if missing) in write-ahead-log mode; the mode is stored in
    the file, so MLflow's own connections use it. Best effort: a store another process has open in
    another mode is left as it is (switching needs the file to itself)."""
    import sqlite3

    try:
        con = sqlite3.connect(db, timeout=1.0)
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                con.execute("PRAGMA journal_mode=WAL")
        finally:
            con.close()
    except sqlite3.Error:
        pass


REACH_TIMEOUT_S = 5.0
NO_SPACE = "no space left on the disk"


def check_store(uri: str | None) -> None:
    """Check the tracking store at `uri` (default as in `tracking_uri`) before a search writes
    anything, writing nothing: an http(s) server must answer within REACH_TIMEOUT_S; an existing
    SQLite store must be a complete MLflow database, and its folder writable. PrunetuneError, one
    line, otherwise."""
    from prunetune.paths import prepare_sqlite

    uri = absolute_sqlite(requested_uri(uri))
    check_scheme(uri, "mlflow")  # no file: store, no in-memory database
    db = sqlite_path(uri)
    if uri.startswith(("http://", "https://")):
        check_reachable(uri)
    elif db is not None:
        prepare_sqlite(uri, "tracking", create=False)  # a writable folder, a SQLite file if any
        check_kind(uri, "mlflow")  # not Optuna's database, nor another application's
        _is_store(db)  # raises for a half-made one
    elif scheme(uri) != "databricks":
        check_kind(uri, "mlflow")  # a database server: reachable, and an MLflow database


def prepare_store(uri: str | None) -> str:
    """The tracking URI (see `tracking_uri`) with its store checked (`check_store`) and ready: a
    missing SQLite store is created completely or not at all (`_create_sqlite_store`), by one
    process at a time. PrunetuneError, one line, otherwise (OSError ENOSPC for a full disk)."""
    check_store(uri)
    uri = tracking_uri(uri)
    db = sqlite_path(uri)
    if db is not None:
        from prunetune.paths import file_lock

        if not _is_store(db):
            with file_lock(f"{hashlib.sha256(uri.encode()).hexdigest()[:24]}.mlflow-store"):
                if not _is_store(db):
                    _create_sqlite_store(db)
        _use_wal(db)
    return uri


def check_reachable(uri: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """PrunetuneError unless the tracking server at `uri` answers HTTP (any status) within
    `timeout` seconds."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(_health_request(uri), timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise PrunetuneError(
            f"MLflow tracking server {mask_url(uri)} is not reachable "
            f"({scrub(str(reason), uri)}); start it or "
            "pass another --tracking-uri"
        ) from None


def _health_request(uri: str):
    """The request for the server's /health page; credentials in the URL (user:password@) sent as
    HTTP basic authentication, as MLflow's client sends them (urllib would take them for a host)."""
    import base64
    import urllib.request
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    url = parts._replace(netloc=host, query="", fragment="").geturl().rstrip("/") + "/health"
    request = urllib.request.Request(url)
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    return request


def _is_store(db: Path) -> bool:
    """Whether `db` is a complete MLflow store (PrunetuneError for a half-made one); False when it
    is missing or empty."""
    import sqlite3

    if not db.is_file() or db.stat().st_size == 0:
        return False
    try:
        con = sqlite3.connect(db, timeout=30)  # an existing file: opening it writes nothing
        try:
            tables = {
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise PrunetuneError(f"MLflow store {str(db)!r} cannot be read: {exc}") from None
    if "alembic_version" not in tables or any(t.startswith("_alembic_tmp_") for t in tables):
        raise PrunetuneError(
            f"MLflow store {str(db)!r} is incomplete (its creation was cut short): "
            "move it away and re-run to create a new one"
        )
    return True


def _create_sqlite_store(db: Path) -> None:
    """Create the MLflow SQLite store `db` (tables, migrations, default experiment) in a temporary
    file beside it, then move that into place: a crash or a full disk leaves no half-made store.
    OSError (ENOSPC) when the disk is full, PrunetuneError (one line) for other failures."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # MLflow announces at INFO that it creates a new store's tables: not news for the user
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    tmp = db.with_name(f".{db.name}.creating-{os.getpid()}")
    tmp_uri = sqlite_url(tmp)
    try:
        tmp.touch(exist_ok=False)  # an unwritable folder fails here, not in MLflow's retries
        # MLflow keeps an engine per URI for the process; without a pool (its documented setting)
        # that engine holds no connection to the temporary file once the store is made, also
        # after a failure (an open connection would hold the deleted file's space)
        with _environ(MLFLOW_SQLALCHEMYSTORE_POOLCLASS="NullPool"):
            SqlAlchemyStore(tmp_uri, (db.parent / "artifacts").as_uri()).engine.dispose()
        os.replace(tmp, db)
    except Exception as exc:
        why = _first_line(exc)
        if why == NO_SPACE:  # a fault, not the user's input: exit 1 (see cli.main)
            raise OSError(errno.ENOSPC, f"while creating the MLflow store {str(db)!r}") from None
        raise PrunetuneError(f"cannot create the MLflow store {str(db)!r}: {why}") from None
    finally:
        for leftover in (tmp, *(tmp.with_name(tmp.name + x) for x in ("-journal", "-wal", "-shm"))):
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def _environ(**values: str):
    """Environment variables set to `values` inside the block, restored after it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _first_line(exc: BaseException) -> str:
    """The root cause of `exc` in one short line (a full disk anywhere in its chain named so)."""
    if disk_full(exc):
        return NO_SPACE
    while exc.__cause__ or exc.__context__:
        exc = exc.__cause__ or exc.__context__
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
