"""Store locations (prunetune.paths): absolute SQLite URLs, folders checked before writing, paths
kept inside the store, the home and lock folders, the file lock."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from prunetune.errors import PrunetuneError
from prunetune.paths import (
    SQLITE_MAGIC,
    absolute_sqlite,
    check_home,
    check_sqlite_file,
    check_writable_folder,
    file_lock,
    inside,
    lock_dir,
    prepare_sqlite,
    study_dir,
)


def test_relative_sqlite_urls_become_absolute_and_others_stay(tmp_path):
    assert absolute_sqlite("sqlite:///sub/x.db") == f"sqlite:///{tmp_path / 'sub' / 'x.db'}"
    assert absolute_sqlite("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert absolute_sqlite("postgresql://h/db") == "postgresql://h/db"


def test_a_folder_under_a_file_is_refused_and_nothing_is_created(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(PrunetuneError, match="cannot be created: .* is a file"):
        check_writable_folder(tmp_path / "f" / "a" / "b", "store")
    check_writable_folder(tmp_path / "new" / "deep", "store")
    assert not (tmp_path / "new").exists()


def test_prepare_sqlite_creates_the_folder_only_when_asked(tmp_path):
    url = prepare_sqlite("sqlite:///db/x.db", "study", create=False)
    assert url == f"sqlite:///{tmp_path / 'db' / 'x.db'}" and not (tmp_path / "db").exists()
    prepare_sqlite("sqlite:///db/x.db", "study", create=True)
    assert (tmp_path / "db").is_dir()
    assert prepare_sqlite("postgresql://h/db", "study", create=True) == "postgresql://h/db"


def test_a_file_that_is_no_sqlite_database_is_refused(tmp_path):
    check_sqlite_file(tmp_path / "missing.db", "study")
    (tmp_path / "empty.db").write_bytes(b"")
    check_sqlite_file(tmp_path / "empty.db", "study")
    (tmp_path / "ok.db").write_bytes(SQLITE_MAGIC + b"rest")
    check_sqlite_file(tmp_path / "ok.db", "study")
    (tmp_path / "other.db").write_text("a csv, say")
    with pytest.raises(PrunetuneError, match="is not a SQLite database"):
        check_sqlite_file(tmp_path / "other.db", "study")
    with pytest.raises(PrunetuneError, match="is not a file"):
        check_sqlite_file(tmp_path, "study")


def test_paths_may_not_lead_out_of_the_store(tmp_path):
    assert inside(tmp_path, "a", "b") == tmp_path.resolve() / "a" / "b"
    with pytest.raises(PrunetuneError, match="outside"):
        inside(tmp_path / "store", "..", "elsewhere")
    (tmp_path / "store").mkdir()
    os.symlink("/", tmp_path / "store" / "link")
    with pytest.raises(PrunetuneError, match="outside"):
        inside(tmp_path / "store", "link", "etc")
    assert study_dir("s-1") == tmp_path.resolve() / "mlruns" / "prunetune" / "s-1"


def test_a_home_that_is_a_file_is_one_error(tmp_path, monkeypatch):
    (tmp_path / "home").write_text("x")
    monkeypatch.setenv("PRUNETUNE_HOME", str(tmp_path / "home"))
    with pytest.raises(PrunetuneError, match="is a file, not a folder"):
        check_home()
    monkeypatch.setenv("PRUNETUNE_HOME", str(tmp_path / "fresh"))
    assert check_home() == tmp_path / "fresh" and not (tmp_path / "fresh").exists()


def test_locks_live_in_the_runtime_folder_else_in_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNETUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert lock_dir() == tmp_path / "prunetune"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    assert lock_dir() == tmp_path / "home" / "locks"


def test_the_file_lock_has_one_holder_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    order: list[str] = []

    def second() -> None:
        with file_lock("test.lock"):
            order.append("second")

    with file_lock("test.lock"):
        other = threading.Thread(target=second)
        other.start()
        time.sleep(0.3)
        order.append("first done")
    other.join(10)
    assert order == ["first done", "second"]
    assert (Path(tmp_path) / "prunetune" / "test.lock").stat().st_mode & 0o777 == 0o600
