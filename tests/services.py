"""Real services for the cluster tests, on 127.0.0.1 only, torn down by their context managers:
a private PostgreSQL server (Debian's `postgresql` package; `.ci/run` installs it), an MLflow
tracking server with proxied artifacts, and a two-node Ray cluster whose nodes run in their own
working and temp directories. Nothing here is a stand-in: each starts the real program."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> Path | None:
    """The folder of PostgreSQL's server programs, or None when the server is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its programs as the `postgres` user."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@contextlib.contextmanager
def postgres_server(databases: tuple[str, ...] = ("prunetune",)) -> Iterator[str]:
    """A fresh PostgreSQL cluster on a free 127.0.0.1 port with trust authentication; yields the
    URL prefix `postgresql://postgres@127.0.0.1:PORT` (append `/DBNAME`). Stopped and removed
    after."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL server programs not found (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="pt-pg-"))
    data, port = root / "data", free_port()
    os.chmod(root, 0o755)
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(root, pg.pw_uid, pg.pw_gid)

    def run(*cmd):
        return subprocess.run(
            _as_postgres_user(list(cmd)), check=True, capture_output=True, text=True
        )

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200",
            "start",
        )
        try:
            for name in databases:
                run(
                    str(bindir / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "postgres",
                    name,
                )
            yield f"postgresql://postgres@127.0.0.1:{port}"
        finally:
            subprocess.run(
                _as_postgres_user(
                    [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
                ),
                capture_output=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def wait_http(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, artifacts: Path) -> Iterator[str]:
    """`mlflow server` on a free 127.0.0.1 port with proxied artifact serving (`--serve-artifacts`,
    artifacts kept in `artifacts`); yields its http:// URL. Terminated after."""
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    log = open(artifacts.parent / f"mlflow-server-{port}.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            backend_store_uri,
            "--serve-artifacts",
            "--artifacts-destination",
            str(artifacts),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc=proc)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


def kill_processes_mentioning(text: str, timeout: float = 20.0) -> None:
    """SIGKILL every process whose command line contains `text` (a node's unique temp folder
    names its raylet, GCS and workers), and wait until they are gone."""

    def matching() -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                with contextlib.suppress(OSError):
                    if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                        errors="replace"
                    ):
                        pids.append(int(entry.name))
        return pids

    end = time.time() + timeout
    while (pids := matching()) and time.time() < end:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, 9)
        time.sleep(0.3)


def _ray(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    ray = Path(sys.executable).parent / "ray"
    return subprocess.run(
        [str(ray), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


@contextlib.contextmanager
def ray_two_nodes(
    head_dir: Path, worker_dir: Path, *, head_cpus: int = 1, worker_cpus: int = 1
) -> Iterator[str]:
    """A Ray head and one worker node, one CPU each, started by `ray start` in different working
    directories with different temp directories (as two machines would be); yields the head's
    HOST:PORT. `ray stop` on both after (their temp folders removed)."""
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    head_tmp = Path(
        tempfile.mkdtemp(prefix="rh-")
    )  # short: Ray's socket paths must stay < 108 chars
    worker_tmp = Path(tempfile.mkdtemp(prefix="rw-"))
    address = f"127.0.0.1:{port}"
    try:
        started = _ray(
            [
                "start",
                "--head",
                "--port",
                str(port),
                "--node-ip-address",
                "127.0.0.1",
                "--num-cpus",
                str(head_cpus),
                "--include-dashboard",
                "false",
                "--temp-dir",
                str(head_tmp),
                "--disable-usage-stats",
            ],
            head_dir,
            env,
        )
        if started.returncode:
            raise RuntimeError(f"ray start --head failed: {started.stderr[-2000:]}")
        started = _ray(
            [
                "start",
                "--address",
                address,
                "--node-ip-address",
                "127.0.0.1",
                "--num-cpus",
                str(worker_cpus),
                "--temp-dir",
                str(worker_tmp),
                "--disable-usage-stats",
            ],
            worker_dir,
            env,
        )
        if started.returncode:
            raise RuntimeError(f"ray start (worker) failed: {started.stderr[-2000:]}")
        yield address
    finally:
        # not `ray stop`: it would stop every Ray of this machine's user, not just these two nodes
        for tmp in (worker_tmp, head_tmp):
            kill_processes_mentioning(str(tmp))
        shutil.rmtree(head_tmp, ignore_errors=True)
        shutil.rmtree(worker_tmp, ignore_errors=True)
