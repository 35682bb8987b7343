"""MLflow tracking as a user sees it: `prunetune ui` serving a real search's parent run and Pareto
artifacts over HTTP, resumed searches refreshing the front in the same experiment, the registry,
and the Pareto plots' per-panel front line. Real MLflow stores and servers; no mocks."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from contextlib import closing
from pathlib import Path

import mlflow
import pytest

from prunetune.cli import build_parser, main
from prunetune.errors import PrunetuneError
from prunetune.search import plots
from prunetune.search.records import COMPLETE, TrialRecord
from prunetune.search.results import SearchResult
from prunetune.search.tracking import registered_name, ui_command
from tests.helpers import search_args

SERVER_START_TIMEOUT = 150.0  # mlflow server imports take ~25 s on a busy 2-core machine


def _pareto_json(capsys, study: str) -> list[dict]:
    capsys.readouterr()
    assert main(["pareto", "--study", study, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def _client(cwd: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")


# -- prunetune ui ----------------------------------------------------------------------------------
def test_ui_binds_localhost_unless_host_given(isolated):
    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"
    with pytest.raises(PrunetuneError, match="no MLflow store"):
        ui_command(None, host="127.0.0.1", port=5000)
    assert main(["ui"]) == 2  # one-line error, no server started on an empty folder
    db = isolated / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    db.touch()  # a store exists (its content is the server's business)
    argv, env = ui_command(f"sqlite:///{db}", host="0.0.0.0", port=5123)
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and argv[argv.index("--port") + 1] == "5123"
    assert (
        env["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{db}" and "--backend-store-uri" not in argv
    )
    assert argv[argv.index("--artifacts-destination") + 1] == str(isolated / "mlruns" / "artifacts")
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_ui_keeps_a_store_password_off_the_command_line():
    """Issue 24: `ps` shows every process's argv to every user; the password goes by environment."""
    uri = "postgresql://user:s3cret@127.0.0.1:5432/mlflow"
    argv, env = ui_command(uri, host="127.0.0.1", port=5123)
    assert not any("s3cret" in a for a in argv) and env["MLFLOW_BACKEND_STORE_URI"] == uri


@pytest.mark.parametrize(
    "port, code, message",
    [
        (70000, 2, "--port must be in 1-65535, got 70000"),
        (0, 2, "--port must be in 1-65535, got 0"),
        ("busy", 1, "is in use (another server?)"),
    ],
)
def test_ui_port_out_of_range_or_in_use_is_one_line(isolated, capsys, port, code, message):
    """Used to be a traceback from the server, exit 0."""
    with socket.socket() as holder:
        if port == "busy":
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
        assert main(["ui", "--port", str(port)]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_ui_on_a_public_host_warns_that_it_has_no_login(isolated, capsys):
    assert (
        main(["ui", "--host", "0.0.0.0", "--port", str(_free_port())]) == 2
    )  # no store: stops there
    err = capsys.readouterr().err
    assert "warning: the MLflow UI has no login" in err and "no MLflow store" in err
    assert main(["ui", "--port", str(_free_port())]) == 2
    assert "no login" not in capsys.readouterr().err  # 127.0.0.1: nobody else reaches it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, data: dict | None = None) -> bytes:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read()


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on `port`."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                out.add(addr)
    return out


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_ui_serves_the_parent_run_and_its_pareto_artifacts(isolated, capsys):
    assert main(search_args("ui", 3)) == 0
    front = _pareto_json(capsys, "ui")
    port = _free_port()
    uri = f"sqlite:///{isolated / 'mlruns' / 'mlflow.db'}"
    log = (isolated / "ui.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prunetune", "ui", "--port", str(port), "--tracking-uri", uri],
        cwd=isolated,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.time() + SERVER_START_TIMEOUT
        while True:
            assert proc.poll() is None, (isolated / "ui.log").read_text()
            try:
                if _get(f"{base}/health") == b"OK":
                    break
            except OSError:
                pass
            assert time.time() < end, "server did not start:\n" + (isolated / "ui.log").read_text()
            time.sleep(0.5)
        assert _listening_addresses(port) == {"0100007F"}, "must listen on 127.0.0.1 only"
        assert b"<html" in _get(base + "/").lower()  # the UI itself

        api = f"{base}/ajax-api/2.0/mlflow"
        exp = json.loads(_get(f"{api}/experiments/get-by-name?experiment_name=ui"))["experiment"]
        assert exp["artifact_location"].startswith("file:///")
        runs = json.loads(
            _get(
                f"{api}/runs/search",
                {
                    "experiment_ids": [exp["experiment_id"]],
                    "filter": "tags.`prunetune.role` = 'search'",
                },
            )
        )["runs"]
        assert len(runs) == 1
        run_id = runs[0]["info"]["run_id"]
        tags = {t["key"]: t["value"] for t in runs[0]["data"]["tags"]}
        assert sorted(map(int, tags["pareto_trials"].split(","))) == sorted(
            r["trial"] for r in front
        )

        listed = json.loads(_get(f"{api}/artifacts/list?run_id={run_id}"))
        names = {f["path"] for f in listed["files"]}
        assert {
            "pareto_front.csv",
            "pareto_front.json",
            "pareto_front.png",
            "pareto_front.html",
        } <= names

        def artifact(path: str) -> bytes:  # what the UI's artifact viewer fetches
            q = urllib.parse.urlencode({"path": path, "run_uuid": run_id})
            return _get(f"{base}/get-artifact?{q}")

        assert json.loads(artifact("pareto_front.json")) == front
        assert artifact("pareto_front.png").startswith(b"\x89PNG\r\n\x1a\n")
        html = artifact("pareto_front.html")
        assert (
            b"<svg" in html and b"<script" not in html
        )  # renders inside MLflow's sandboxed viewer

        on_front = json.loads(
            _get(
                f"{api}/runs/search",
                {"experiment_ids": [exp["experiment_id"]], "filter": "tags.pareto = 'true'"},
            )
        )["runs"]
        trials = sorted(
            int(t["value"]) for r in on_front for t in r["data"]["tags"] if t["key"] == "trial"
        )
        assert trials == sorted(r["trial"] for r in front)

        versions = json.loads(
            _get(
                f"{api}/model-versions/search?"
                + urllib.parse.urlencode({"filter": f"name='{registered_name('ui')}'"})
            )
        )
        [version] = versions["model_versions"]
        assert {"key": "trial", "value": tags["selected_trial"]} in version["tags"]
        assert version["source"].endswith(f"/selected/trial-{int(tags['selected_trial']):05d}")
    finally:
        proc.send_signal(signal.SIGTERM)  # what a supervisor sends to `prunetune ui`'s pid
        try:
            proc.wait(timeout=60)
            end = time.time() + 30
            while _group_alive(proc.pid) and time.time() < end:
                time.sleep(0.2)
            leftover = _group_alive(proc.pid)
        finally:
            if _group_alive(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()
    assert not leftover, "SIGTERM to `prunetune ui` left server processes running"


# -- resume ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_adds_children_and_refreshes_the_front_everywhere(isolated, capsys):
    assert main(search_args("res", 2)) == 0
    client = _client(isolated)
    exp_id = client.get_experiment_by_name("res").experiment_id
    first = client.search_runs([exp_id], "tags.`prunetune.role` = 'trial'")
    front_1 = {int(r["trial"]) for r in _pareto_json(capsys, "res")}
    assert {int(r.data.tags["trial"]) for r in first if r.data.tags["pareto"] == "true"} == front_1
    for r in first:  # stale tags, as if the front had changed: the resume must rewrite them all
        client.set_tag(
            r.info.run_id, "pareto", "false" if r.data.tags["pareto"] == "true" else "true"
        )
    # trial 0's child lost, as when a search is killed between Optuna's tell and the MLflow write
    client.delete_run(next(r.info.run_id for r in first if r.data.tags["trial"] == "0"))
    versions_1 = client.search_model_versions(f"name = '{registered_name('res')}'")
    assert len(versions_1) == 1

    assert main(search_args("res", 4)) == 0
    rows = _pareto_json(capsys, "res")
    front = {r["trial"] for r in rows}
    assert [e.experiment_id for e in client.search_experiments() if e.name == "res"] == [exp_id]
    parents = client.search_runs(
        [exp_id], "tags.`prunetune.role` = 'search'", order_by=["attributes.start_time DESC"]
    )
    children = client.search_runs([exp_id], "tags.`prunetune.role` = 'trial'")
    assert (
        len(parents) == 1 and parents[0].info.status == "FINISHED"
    )  # one parent per study, resumed
    assert sorted(int(c.data.tags["trial"]) for c in children) == [0, 1, 2, 3]
    newest = parents[0].info.run_id
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {
        newest
    }  # 0: backfilled under it
    assert parents[0].data.tags["budget"] == "4" and parents[0].data.params["ratio_max"]
    assert {int(c.data.tags["trial"]) for c in children if c.data.tags["pareto"] == "true"} == front
    db = isolated / "mlruns" / "mlflow.db"
    with closing(sqlite3.connect(db)) as con:  # write-ahead log: fast commits, readers never block
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    got = json.loads(
        Path(client.download_artifacts(newest, "pareto_front.json", str(isolated))).read_text()
    )
    assert got == rows
    assert {int(n) for n in parents[0].data.tags["pareto_trials"].split(",")} == front
    assert parents[0].data.metrics["front_size"] == len(front)
    cost = parents[0].data.metrics  # the search's own tracking overhead, on the parent
    assert (
        cost["tracking_s"] > 0 and cost["trial_s"] > 0
    )  # two trials (2, 3) ran in this invocation
    assert cost["tracking_share"] == pytest.approx(cost["tracking_s"] / cost["trial_s"])

    # the registered model follows the selection: a folder source that models:/ URIs resolve
    versions = client.search_model_versions(f"name = '{registered_name('res')}'")
    newest_version = max(versions, key=lambda v: int(v.version))
    selected = parents[0].data.tags["selected_trial"]
    assert newest_version.tags["trial"] == selected
    mlflow.set_tracking_uri(f"sqlite:///{isolated / 'mlruns' / 'mlflow.db'}")
    files = os.listdir(
        mlflow.artifacts.download_artifacts(
            f"models:/{registered_name('res')}/{newest_version.version}",
            dst_path=str(isolated / "dl"),
        )
    )
    assert sorted(files) == ["model.json", f"trial-{int(selected):05d}.pt"]
    assert len(versions) == len(versions_1) + (selected != versions_1[0].tags["trial"])


# -- plots -----------------------------------------------------------------------------------------
def _record(n: int, acc: float, flops: float, fps: float) -> TrialRecord:
    return TrialRecord(
        number=n, state=COMPLETE, params={}, metrics={"accuracy": acc, "flops": flops, "fps": fps}
    )


def test_plot_line_joins_only_the_front_members_non_dominated_in_the_panel(tmp_path):
    # trial 2 is on the 3-objective front only thanks to its FPS: in the FLOPs panel it lies under
    # trial 1 (more FLOPs, less accuracy), so the FLOPs line must skip it; trial 3 is dominated.
    recs = [
        _record(0, 0.90, 1e5, 500),
        _record(1, 0.95, 1e6, 400),
        _record(2, 0.93, 2e6, 900),
        _record(3, 0.80, 3e6, 100),
    ]
    result = SearchResult(
        study_name="p",
        objectives=["accuracy", "flops", "fps"],
        base_metrics={},
        records=recs,
        front=[0, 1, 2],
        knee=1,
    )
    trials, members, envelope = plots._panel(result, "flops")
    assert trials.labels == ["trial 3"] and sorted(members.labels) == [
        "trial 0",
        "trial 1",
        "trial 2",
    ]
    assert envelope.labels == ["trial 0", "trial 1"]
    _, _, envelope = plots._panel(result, "fps")
    assert envelope.labels == ["trial 1", "trial 2"]  # by FPS: accuracy falls as FPS rises
    assert plots.pareto_png(result, tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")
    assert b"front in this plane" in plots.pareto_html(result, tmp_path / "p.html").read_bytes()


def test_a_new_store_keeps_no_connection_to_its_file(isolated, monkeypatch):
    """The store is made in a temporary file then moved into place: afterwards no connection
    MLflow keeps is open on that file (after a failure it would hold the deleted file's space), and
    MLflow's pool setting is left as the user had it."""
    from prunetune.search.tracking import prepare_store

    monkeypatch.delenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", raising=False)
    db = isolated / "new" / "mlflow.db"
    uri = prepare_store(f"sqlite:///{db}")
    fds = [f"/proc/self/fd/{fd}" for fd in os.listdir("/proc/self/fd")]
    open_files = [os.readlink(fd) for fd in fds if os.path.islink(fd)]
    assert not [f for f in open_files if f.startswith(str(db.parent))], open_files
    assert "MLFLOW_SQLALCHEMYSTORE_POOLCLASS" not in os.environ
    assert mlflow.MlflowClient(uri).get_experiment("0") is not None  # a complete store
