"""The Ray Tune backend, end to end, with real Ray: a local Ray started by the search, kill -9 and
resume on a two-node cluster simulated on this machine (joined with --address), the QuietLock
across Ray worker processes, and a bad --address. Every search runs the CLI in a subprocess in a
session of its own, so Ray's process state never leaks into other tests, and no process it caused
may outlive it (found by session id: other jobs' Ray processes on the machine do not count)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from prunetune.search.api import pareto_report
from prunetune.search.objective import trial_seed
from prunetune.search.quiet import QuietLock
from tests.helpers import finished, load_study, search_args, states, wait_for

pytestmark = pytest.mark.slow

RAY = ["--backend", "ray", "--workers", "2"]
NOISE = (
    "Traceback",
    "View detailed results",
    "Configuration for experiment",
    "tune_controller",
    "(raylet)",
    "logging.cc",
    "Ray Tune",
    "WARNING",
)

# A head node and one worker node, one CPU each, on this machine; prints its address and node ids,
# shuts the cluster down when stdin closes.
CLUSTER = """
import json, sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
worker = cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
print(json.dumps({"address": cluster.address,
                  "nodes": [cluster.head_node.node_id, worker.node_id]}), flush=True)
sys.stdin.read()
cluster.shutdown()
"""

# Two Ray tasks pinned to the two nodes (so two worker processes): the first holds QuietLock in one
# mode for 1.5 s, the second asks for it in another mode once the first holds it.
LOCK_PROBE = """
import json, os, sys, time
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from prunetune.search.quiet import QuietLock

address, mark = sys.argv[1:3]
ray.init(address=address, log_to_driver=False, logging_level="ERROR")

@ray.remote(num_cpus=1)
def hold(mode, seconds):
    with getattr(QuietLock(), mode)():
        start = time.time()
        open(mark, "w").close()
        time.sleep(seconds)
        end = time.time()
    return {"start": start, "end": end, "pid": os.getpid()}

@ray.remote(num_cpus=1)
def ask(mode):
    while not os.path.exists(mark):
        time.sleep(0.005)
    asked = time.time()
    with getattr(QuietLock(), mode)():
        got = time.time()
    return {"asked": asked, "got": got, "pid": os.getpid()}

nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
out = {}
for first, second in (("busy", "quiet"), ("quiet", "busy"), ("busy", "busy")):
    if os.path.exists(mark):
        os.remove(mark)
    a = hold.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[0], soft=False)
    ).remote(first, 1.5)
    b = ask.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[1], soft=False)
    ).remote(second)
    out[f"{first}-{second}"] = ray.get([a, b])
print(json.dumps(out))
"""


def session_processes(sid: int) -> list[int]:
    """Live processes of the session `sid`. Everything a search started in its own session (the
    local Ray: GCS, raylet, agents, trial actors) stays in that session, whatever its parent."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def kill_session(sid: int) -> None:
    """kill -9 every process of the session `sid` (a worker Ray was still starting may otherwise
    take a minute to notice its raylet is gone)."""
    end = time.time() + 20
    while (left := session_processes(sid)) and time.time() < end:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def assert_session_ended(sid: int, timeout: float = 20.0) -> None:
    """Nothing of the session `sid` outlives it; leftovers are killed (they are this test's), then
    the test fails."""
    end = time.time() + timeout
    while (left := session_processes(sid)) and time.time() < end:
        time.sleep(0.5)
    kill_session(sid)
    assert not left, f"processes left behind: {left}"


def start_search(args: list[str], cwd: Path, home: str, **kw) -> subprocess.Popen:
    """`python -m prunetune ARGS` in a new session (its id = its pid)."""
    return subprocess.Popen(
        [sys.executable, "-m", "prunetune", *args],
        cwd=cwd,
        text=True,
        start_new_session=True,
        env=env(home),
        **kw,
    )


def run_search(args: list[str], cwd: Path, home: str) -> subprocess.CompletedProcess:
    """Run the CLI to the end, then check that it left no process behind (its Ray included)."""
    proc = start_search(args, cwd, home, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # timed out
            kill_session(proc.pid)
    assert_session_ended(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def env(home: str) -> dict[str, str]:
    """This process's environment for a child, with the session's model cache, without a tracking
    URI another test may have left behind (MLflow exports it), so the child uses ./mlruns."""
    return {
        **{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        "PRUNETUNE_HOME": home,
        "RAY_AUTH_MODE": "disabled",
    }


def mlflow_runs(cwd: Path, study: str) -> tuple[list, list]:
    """(parent runs, trial runs) of the study's experiment in cwd's MLflow store."""
    client = MlflowClient(
        tracking_uri=f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}"
    )  # no global state
    runs = client.search_runs(
        [client.get_experiment_by_name(study).experiment_id], max_results=1000
    )
    parents = [r for r in runs if r.data.tags.get("prunetune.role") == "search"]
    children = [r for r in runs if r.data.tags.get("prunetune.role") == "trial"]
    return parents, children


@pytest.fixture(scope="module")
def first_search(tmp_path_factory, prunetune_home):
    """`search --backend ray --workers 2 --trials 4` on a local Ray; what it left, read at once
    (the resume test continues the same study)."""
    cwd = tmp_path_factory.mktemp("ray-local")
    proc = run_search(search_args("ray", 4, *RAY), cwd, prunetune_home)
    assert proc.returncode == 0, proc.stderr
    study = load_study(cwd, "ray")
    parents, children = mlflow_runs(cwd, "ray")
    # what `prunetune pareto --study ray --format json` prints
    front = json.loads(
        pareto_report("ray", storage=f"sqlite:///{cwd / 'mlruns' / 'optuna.db'}", fmt="json")
    )
    return {
        "cwd": cwd,
        "proc": proc,
        "trials": study.trials,
        "states": states(study),
        "parents": parents,
        "children": children,
        "front": front,
    }


def test_ray_search_lands_in_the_study_and_under_one_mlflow_parent(first_search):
    s = first_search
    assert s["states"] == {"COMPLETE": 4}
    # run by Ray worker processes, at most 2 of them (reused actors); asked by the driver
    drivers = {t.user_attrs["worker"] for t in s["trials"]}
    ray_workers = {t.user_attrs["ray_worker"] for t in s["trials"]}
    assert len(drivers) == 1 and not drivers & ray_workers
    assert 1 <= len(ray_workers) <= 2
    assert all(t.user_attrs["record"]["metrics"]["fps"] > 0 for t in s["trials"])
    # Ray trials keep their own resources: one reserved CPU, one training thread (auto has
    # nothing to choose), recorded like the embedded runner's choice
    assert {t.user_attrs["record"]["context"]["train_threads"] for t in s["trials"]} == {1}
    parents, children = s["parents"], s["children"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["backend"] == "ray"
    assert len(children) == 4
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    tagged = sorted(int(c.data.tags["trial"]) for c in children if c.data.tags["pareto"] == "true")
    assert tagged and tagged == sorted(r["trial"] for r in s["front"])
    # Ray's console output stays off the user's screen
    out = s["proc"].stdout + s["proc"].stderr
    assert not [n for n in NOISE if n in out], out
    assert "Pareto front of study 'ray'" in s["proc"].stdout


@pytest.fixture(scope="module")
def cluster(prunetune_home):
    """A two-node Ray cluster on this machine, in its own process; stopped afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CLUSTER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        env=env(prunetune_home),
    )
    try:
        yield json.loads(proc.stdout.readline())
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
        assert_session_ended(proc.pid)  # the nodes, and the workers the searches used on them


def test_killed_search_resumes_on_an_existing_two_node_cluster(
    first_search, cluster, prunetune_home
):
    """kill -9 of a Ray search (driver, Ray and actors) with trials in flight; then a second
    invocation with a larger --trials joins a two-node cluster (--address) and continues the study:
    finished trials kept, the killed driver's trials re-run with their params and seeds, budget
    reached, trials on the cluster. One flow, to keep this file fast."""
    cwd = first_search["cwd"]
    killed = start_search(
        search_args("ray", 8, *RAY, "--epochs", "300"),
        cwd,
        prunetune_home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    driver = f"{socket.gethostname()}:{killed.pid}"

    def in_flight() -> bool:
        assert killed.poll() is None, "the search to be killed ended early"
        return any(
            t.state.name == "RUNNING" and t.user_attrs.get("worker") == driver
            for t in load_study(cwd, "ray").trials
        )

    try:
        assert wait_for(in_flight), "the search never started a trial"
    finally:
        kill_session(killed.pid)  # the driver, the local Ray it started and the trial actors
        killed.wait(timeout=60)

    proc = run_search(
        search_args("ray", 8, *RAY, "--address", cluster["address"]), cwd, prunetune_home
    )
    assert proc.returncode == 0, proc.stderr
    assert "cluster: 2 node(s), 2 CPU(s)" in proc.stderr  # joined it, did not start its own Ray
    assert "left unfinished" in proc.stderr
    study = load_study(cwd, "ray")
    assert finished(study) == 8 and states(study)["COMPLETE"] == 8
    old = {t.number: (t.params, t.values) for t in first_search["trials"]}
    assert {t.number: (t.params, t.values) for t in study.trials[:4]} == old  # finished trials kept
    interrupted = {t.number: t for t in study.trials if t.user_attrs.get("interrupted")}
    # asked and tagged by the killed driver (or killed between its ask and its tag)
    askers = {t.user_attrs.get("worker") for t in interrupted.values()}
    assert driver in askers and askers <= {driver, None}
    replays = [t for t in study.trials if "replay_of" in t.user_attrs]
    assert sorted(t.user_attrs["replay_of"] for t in replays) == sorted(interrupted)
    for t in replays:
        # the params the interrupted trial had are kept; a kill while its space was being sampled
        # (after ask) leaves some or all unsampled, and the sampler proposes those
        # (the seed is still the replayed trial's)
        assert interrupted[t.user_attrs["replay_of"]].params.items() <= t.params.items()
        assert t.user_attrs["record"]["seed"] == trial_seed(0, t.user_attrs["replay_of"])
        assert (
            t.user_attrs["record"]["replay_of"] == t.user_attrs["replay_of"]
        )  # weights: its own number
        assert Path(t.user_attrs["record"]["weights"]).name == f"trial-{t.number:05d}.pt"
    # they ran on the cluster's nodes (which of the two depends on how fast each actor started)
    nodes = {t.user_attrs["ray_node"] for t in study.trials[4:] if t.state.name == "COMPLETE"}
    assert nodes and nodes <= set(cluster["nodes"])
    parents, children = mlflow_runs(cwd, "ray")
    assert [p.info.status for p in parents] == [
        "FINISHED"
    ]  # one parent per study: the resume reopened it
    done = sorted(t.number for t in study.trials if t.state.name == "COMPLETE")
    assert sorted(int(c.data.tags["trial"]) for c in children) == done


def test_quiet_lock_serializes_measurement_against_training_across_ray_workers(
    cluster, isolated, prunetune_home
):
    lock = QuietLock()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", LOCK_PROBE, cluster["address"], str(isolated / "mark")],
            capture_output=True,
            text=True,
            timeout=120,
            env=env(prunetune_home),
        )
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        lock.gate_path.unlink(missing_ok=True)
        lock.lock_path.unlink(missing_ok=True)
    for case, (held, asked) in out.items():
        assert held["pid"] != asked["pid"], case
        assert asked["asked"] < held["end"], case  # it asked while the other one held the lock
    # a measurement waits for training to end; training waits for a measurement to end
    assert out["busy-quiet"][1]["got"] >= out["busy-quiet"][0]["end"]
    assert out["quiet-busy"][1]["got"] >= out["quiet-busy"][0]["end"]
    # training overlaps training (shared)
    assert out["busy-busy"][1]["got"] < out["busy-busy"][0]["end"]


def test_bad_address_is_one_clear_line(isolated, prunetune_home):
    proc = run_search(
        search_args("bad", 2, *RAY, "--address", "127.0.0.1:1"), isolated, prunetune_home
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "prunetune: error: no Ray cluster at 127.0.0.1:1 (Connection refused); start one with "
        "`ray start --head`, or give the head node's HOST:PORT"
    ]
    assert not (isolated / "mlruns" / "optuna.db").exists()  # failed before anything was written
