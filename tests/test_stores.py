"""Stores under stress: searches starting together on a new MLflow store, a full disk, tracking
URIs that point nowhere or at something that is not a store, and per-user, per-store locks."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from prunetune.cli import main
from prunetune.search.study import make_storage
from prunetune.stores import tables
from tests.helpers import load_study, race, search_args


@contextlib.contextmanager
def tmpfs(where: Path, size: str, *options: str):
    """A real tmpfs of `size` mounted at `where` (created); skips the test where mounting is not
    permitted (not root, or no mount namespace)."""
    where.mkdir(parents=True, exist_ok=True)
    opts = ",".join([f"size={size}", *options])
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextlib.contextmanager
def read_only_view(src: Path, where: Path):
    """`src` bind-mounted read-only at `where` (created); skips where mounting is not permitted."""
    where.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "--bind", str(src), str(where)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here")
    try:
        if subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(where)], capture_output=True
        ).returncode:
            pytest.skip("cannot remount read-only here")
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path, leave_bytes: int) -> Path:
    """Fill the filesystem of `folder` with one file until about `leave_bytes` are free."""
    st = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_bytes))
    return filler


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("prunetune: error:")]


def open_tracking_after(uri: str, barrier, results) -> None:
    """In a child process: wait at `barrier`, open the MLflow store `uri` as a search does and put
    "ok" or the error in the `results` queue."""
    from prunetune.search.tracking import MlflowTracker

    barrier.wait()
    try:
        MlflowTracker(uri).client.search_experiments()
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")


@pytest.mark.slow
def test_searches_starting_together_create_one_mlflow_store(tmp_path):
    """Three processes opening a new MLflow store at once: unguarded, MLflow's table creation and
    migrations collide ("table metrics already exists", "duplicate column name")."""
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - imported once, before the fork

    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    assert race(open_tracking_after, uri, 3) == ["ok"] * 3
    assert (
        sorted(p.name for p in (tmp_path / "new").iterdir() if not p.name.startswith("mlflow.db"))
        == []
    )


@pytest.mark.slow
def test_disk_full_while_the_mlflow_store_is_created(isolated, capsys):
    """One line, no half-migrated store left behind (which used to break every later search); with
    space again the store is created."""
    from prunetune.search.tracking import MlflowTracker

    with tmpfs(isolated / "small", "4m") as fs:  # MLflow 3.18's new store: 1.0 MB
        filler = fill(fs, 64 * 1024)
        uri = f"sqlite:///{fs / 'mlflow.db'}"
        assert main(search_args("full", 2, "--tracking-uri", uri)) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(error_lines(err)) == 1 and "no space left" in err, err
        assert [p.name for p in fs.iterdir()] == ["filler"]  # no store, no temporary file
        filler.unlink()
        MlflowTracker(uri).client.search_experiments()  # a complete store now
        assert (fs / "mlflow.db").is_file()


@pytest.mark.slow
def test_disk_full_at_the_end_of_a_search(isolated, capsys):
    """The front's artifacts do not fit: one line, exit 1, the parent run FAILED (not RUNNING,
    not FINISHED), the finished trials kept."""
    import mlflow

    with tmpfs(isolated / "mlruns" / "artifacts" / "full", "512k") as fs:
        fill(fs, 48 * 1024)  # room for the search's start (search_space.json), not for the front
        assert main(search_args("full", 2)) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert len(error_lines(err)) == 1 and "no space left" in error_lines(err)[0], err
    assert sum(t.state.name == "COMPLETE" for t in load_study(isolated, "full").trials) == 2
    mlflow.set_tracking_uri(f"sqlite:///{isolated / 'mlruns' / 'mlflow.db'}")
    parents = mlflow.search_runs(
        experiment_names=["full"],
        output_format="list",
        filter_string="tags.`prunetune.role` = 'search'",
    )
    assert [(p.info.status, p.data.tags["outcome"]) for p in parents] == [("FAILED", "failed")]


@pytest.mark.parametrize(
    "uri, message",
    [
        ("http://127.0.0.1:9", "MLflow tracking server http://127.0.0.1:9 is not reachable"),
        ("sqlite:////proc/mlflow.db", "tracking folder '/proc' is not writable"),
        ("garbage", "is not a SQLite database"),
    ],
    ids=["unreachable", "proc", "garbage"],
)
def test_a_bad_tracking_store_is_one_line_before_anything_is_written(
    isolated, capsys, uri, message
):
    """Used to hang ~270 s then print a 122-line traceback (unreachable), or end in tracebacks; the
    Optuna storage was written anyway."""
    garbage = os.urandom(4096)
    if uri == "garbage":
        (isolated / "mlruns").mkdir()
        (isolated / "mlruns" / "mlflow.db").write_bytes(garbage)
        uri = f"sqlite:///{isolated / 'mlruns' / 'mlflow.db'}"
    assert main(search_args("bad", 2, "--tracking-uri", uri)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    if "mlruns" in uri:  # the garbage file is left as it was, and nothing is beside it
        assert [p.name for p in (isolated / "mlruns").iterdir()] == ["mlflow.db"]
        assert (isolated / "mlruns" / "mlflow.db").read_bytes() == garbage
    else:
        assert not (isolated / "mlruns").exists()


def test_a_garbage_study_storage_is_one_line_before_anything_is_written(isolated, capsys):
    (isolated / "mlruns").mkdir()
    (isolated / "mlruns" / "optuna.db").write_bytes(b"not a database" * 100)
    assert main(search_args("bad", 2)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a SQLite database" in err[0] and "optuna.db" in err[0], err
    assert [p.name for p in (isolated / "mlruns").iterdir()] == ["optuna.db"]


def test_locks_are_per_store_and_in_the_users_folder(isolated, monkeypatch, prunetune_home):
    """Two stores holding a study of the same name do not share its lock (they used to: the lock
    was /tmp/prunetune-<study>.lock, shared by every store and every user)."""
    from prunetune.paths import lock_dir, open_lock_file
    from prunetune.search.quiet import QuietLock
    from prunetune.search.study import budget_lock, lock_name
    from prunetune.search.study_store import load

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    studies = [
        load(make_storage(f"sqlite:///{isolated / d / 'o.db'}"), "same", directions=["minimize"])
        for d in ("a", "b")
    ]
    urls = [f"sqlite:///{isolated / d / 'o.db'}" for d in ("a", "b")]
    with budget_lock(studies[0]):
        for url, held in zip(urls, (True, False)):
            fd = open_lock_file(lock_name(url, "same", "budget"))
            try:
                if held:
                    with pytest.raises(BlockingIOError):
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                else:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the other store's lock is free
            finally:
                os.close(fd)
    folder = lock_dir()
    assert folder == Path(prunetune_home) / "locks" and folder.stat().st_mode & 0o777 == 0o700
    assert (folder / lock_name(urls[0], "same", "budget")).stat().st_mode & 0o777 == 0o600
    assert not list(Path("/tmp").glob("prunetune-same*"))
    lock = QuietLock()  # one per user and machine, whatever the study
    assert lock.lock_path.parent == folder
    runtime = isolated / "run-user"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert (
        lock_dir() == runtime / "prunetune"
        and QuietLock().lock_path.parent == runtime / "prunetune"
    )


def test_an_unwritable_lock_folder_is_one_clear_line(isolated, monkeypatch, capsys):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    (isolated / "mlruns").mkdir()  # a study to read: `pareto` never creates a storage
    optuna.create_study(study_name="x", storage=f"sqlite:///{isolated / 'mlruns' / 'optuna.db'}")
    with tmpfs(isolated / "ro-home", "64k", "ro") as home:
        monkeypatch.setenv("PRUNETUNE_HOME", str(home))
        assert main(["pareto", "--study", "x"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"prunetune: error: cannot create lock files in {str(home / 'locks')!r} "
        "(Read-only file system): set PRUNETUNE_HOME to a writable folder"
    ], err


def test_a_parent_run_whose_process_died_is_ended_killed(isolated):
    """A parent run left RUNNING by a search process that no longer exists (kill -9) is ended
    KILLED with outcome=died; a live process's parent is left running."""
    import socket

    from mlflow.tracking import MlflowClient

    from prunetune.search.tracking import mark_dead_parents, prepare_store, tracking_uri

    uri = tracking_uri(None)
    prepare_store(uri)
    client = MlflowClient(uri)
    exp = client.create_experiment("dead")
    dead_pid = subprocess.Popen(["true"])  # once reaped, its pid names no process
    dead_pid.wait()
    dead = client.create_run(
        exp,
        tags={
            "prunetune.role": "search",
            "prunetune.worker": f"{socket.gethostname()}:{dead_pid.pid}",
        },
    )
    alive = client.create_run(
        exp,
        tags={
            "prunetune.role": "search",
            "prunetune.worker": f"{socket.gethostname()}:{os.getpid()}",
        },
    )
    assert mark_dead_parents(client, exp) == [dead.info.run_id]
    assert client.get_run(dead.info.run_id).info.status == "KILLED"
    assert client.get_run(dead.info.run_id).data.tags["outcome"] == "died"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, but a WAL database's side files (a reader recreates them)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def _other_app_db(path: Path) -> None:
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    con.commit()
    con.close()


@pytest.mark.parametrize(
    "case, flag, message",
    [
        ("mlflow", "--storage", "is an MLflow tracking database, not an Optuna study storage"),
        ("optuna", "--tracking-uri", "is an Optuna study storage, not an MLflow tracking database"),
        ("other", "--storage", "holds other tables (users), not an Optuna study storage"),
        ("other", "--tracking-uri", "holds other tables (users), not an MLflow tracking database"),
    ],
)
def test_a_store_of_the_other_kind_is_refused_before_anything_is_written(
    isolated, capsys, case, flag, message
):
    """`--storage sqlite:///mlruns/mlflow.db` used to create Optuna's 12 tables inside MLflow's
    database, `--tracking-uri sqlite:///mlruns/optuna.db` MLflow's inside Optuna's (alembic
    traceback). Each is one line now, exit 2, every file left byte for byte as it was."""
    from prunetune.search.tracking import prepare_store

    mlruns = isolated / "mlruns"
    mlruns.mkdir()
    target = mlruns / f"{case}.db"
    if case == "mlflow":
        prepare_store(f"sqlite:///{target}")
    elif case == "optuna":
        optuna.create_study(study_name="x", storage=f"sqlite:///{target}")
    else:
        _other_app_db(target)
    before = _snapshot(mlruns)
    assert main(search_args("s", 2, flag, f"sqlite:///{target}")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and flag in err[0], err
    assert _snapshot(mlruns) == before


@pytest.mark.parametrize(
    "flag, url, message",
    [
        ("--tracking-uri", "file:///{tmp}/mlruns-files", "is not supported (scheme 'file')"),
        ("--tracking-uri", "{tmp}/plain-folder", "is not supported (a plain path)"),
        ("--storage", "file:///{tmp}/optuna.db", "is not supported (scheme 'file')"),
        ("--storage", "redis://127.0.0.1:6379/0", "is not supported (scheme 'redis')"),
        ("--storage", "sqlite://", "is an in-memory database"),
        ("--storage", "sqlite:///:memory:", "is an in-memory database"),
    ],
)
def test_an_unsupported_store_is_one_line_before_anything_is_written(
    isolated, capsys, flag, url, message
):
    """`--tracking-uri file:///...` used to end in a traceback after the study was written;
    `--storage sqlite://` (in memory) "succeeded" and the study was gone."""
    assert main(search_args("s", 2, flag, url.format(tmp=isolated))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in isolated.iterdir()) == []


HALF_WRITTEN = """
import os, signal, sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA cache_size=1")  # the change spills into the file: the journal is hot
con.execute("BEGIN")
con.execute("CREATE TABLE scratch (x BLOB)")
con.execute("INSERT INTO scratch VALUES (zeroblob(400000))")
con.execute("UPDATE trials SET state = 'FAIL'")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_store_a_killed_writer_left_half_written_is_read(isolated):
    """A process killed with kill -9 mid-transaction leaves a hot journal beside the SQLite file;
    the read-only check of its tables failed with "attempt to write a readonly database" (CI, in
    the kill -9 test, read the study right after killing a search). Now the transaction is rolled
    back, as the next writer would, and the study reads as it was before it."""
    db = isolated / "optuna.db"
    url = f"sqlite:///{db}"
    optuna.create_study(study_name="s", storage=url).optimize(lambda t: 1.0, n_trials=2)
    proc = subprocess.run([sys.executable, "-c", HALF_WRITTEN, str(db)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (isolated / "optuna.db-journal").stat().st_size > 0
    assert "scratch" not in tables(url)
    study = optuna.load_study(study_name="s", storage=make_storage(url))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


@pytest.mark.parametrize(
    "argv",
    [
        ["pareto"],
        ["pareto", "--study", "s"],
        ["export", "--out", "out"],
        ["export", "--study", "s", "--out", "out"],
    ],
)
def test_read_only_commands_never_create_a_store(isolated, capsys, argv):
    """`pareto` / `export` after optuna.db was deleted used to create a new empty one."""
    (isolated / "mlruns").mkdir()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no study storage at" in err[0], err
    assert sorted(p.name for p in isolated.rglob("*")) == ["mlruns"]
    (isolated / "mlruns" / "optuna.db").write_bytes(
        b""
    )  # an empty file: still no study, left empty
    assert main(argv) == 2
    assert "holds no study yet" in capsys.readouterr().err
    assert (isolated / "mlruns" / "optuna.db").read_bytes() == b""


def test_ui_refuses_a_store_that_is_not_mlflows(isolated, capsys):
    """The MLflow server would migrate Optuna's database into an MLflow one."""
    (isolated / "mlruns").mkdir()
    db = isolated / "mlruns" / "optuna.db"
    optuna.create_study(study_name="x", storage=f"sqlite:///{db}")
    before = db.read_bytes()
    assert main(["ui", "--tracking-uri", f"sqlite:///{db}"]) == 2
    assert "is an Optuna study storage" in capsys.readouterr().err
    assert db.read_bytes() == before


def test_a_read_only_study_storage_on_resume_is_one_line(isolated, capsys):
    """Used to end in StorageInternalError ("attempt to write a readonly database"). A read-only
    mount: chmod does not stop root."""
    (isolated / "src").mkdir()
    optuna.create_study(study_name="s", storage=f"sqlite:///{isolated / 'src' / 'optuna.db'}")
    with read_only_view(isolated / "src", isolated / "ro") as view:
        db = view / "optuna.db"
        before = db.read_bytes()
        assert main(search_args("s", 2, "--storage", f"sqlite:///{db}")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is not writable" in err[0], err
        assert db.read_bytes() == before


@pytest.mark.parametrize("how", ["chmod", "chattr"])
def test_a_read_only_study_storage_file_is_one_line(isolated, capsys, how):
    """The file itself read-only in a writable folder (chmod a-w, or immutable: root can write
    through chmod, so that is refused by its mode): one line before the base is trained."""
    (isolated / "mlruns").mkdir()
    db = isolated / "mlruns" / "optuna.db"
    optuna.create_study(study_name="s", storage=f"sqlite:///{db}")
    before = db.read_bytes()
    if how == "chmod":
        db.chmod(0o444)
    elif subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode:
        pytest.skip("chattr +i is not permitted here")
    try:
        assert main(search_args("s", 2)) == 2
    finally:
        subprocess.run(["chattr", "-i", str(db)], capture_output=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("is read-only (mode 444)" in err[0] or "is not writable" in err[0]), (
        err
    )
    assert db.read_bytes() == before


def test_export_into_a_read_only_or_impossible_folder_is_one_line(isolated, capsys):
    (isolated / "a-file").write_text("x")
    assert main(["export", "--out", str(isolated / "a-file" / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be created" in err[0] and "is a file" in err[0], err
    with tmpfs(isolated / "ro", "64k", "ro") as fs:
        assert main(["export", "--out", str(fs / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is not writable" in err[0], err
    assert sorted(p.name for p in isolated.iterdir()) == ["a-file", "ro"]


@pytest.mark.parametrize("home", ["file", "under-file", "read-only"])
def test_an_unusable_prunetune_home_is_one_line_before_the_base_is_trained(
    isolated, monkeypatch, capsys, home
):
    """Used to be NotADirectoryError, and only after the base model was trained."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    (isolated / "a-file").write_text("x")
    with contextlib.ExitStack() as stack:
        path = {
            "file": isolated / "a-file",
            "under-file": isolated / "a-file" / "home",
            "read-only": None,
        }[home]
        if path is None:
            path = stack.enter_context(tmpfs(isolated / "ro", "64k", "ro")) / "home"
        monkeypatch.setenv("PRUNETUNE_HOME", str(path))
        for argv in (search_args("s", 2), ["train", "--model", "tiny_cnn", "--dataset", "digits"]):
            assert main(argv) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "PRUNETUNE_HOME" in err[0] and "training" not in err[0], err
    assert not (isolated / "mlruns").exists()
