"""Real end-to-end searches (tiny model, real Optuna, real MLflow, real subprocesses)."""

from __future__ import annotations

import json
import signal
import subprocess

import mlflow
import pytest

from prunetune.cli import main
from prunetune.search import study_store
from prunetune.search.study import make_storage
from tests.helpers import finished, load_study, run_cli, search_args, start_cli, states, wait_for

pytestmark = pytest.mark.slow


def test_search_records_front_and_mlflow(isolated, capsys):
    assert main(search_args("e2e", 6)) == 0
    out = capsys.readouterr().out
    assert "Pareto front of study 'e2e'" in out and "base" in out
    study = load_study(isolated, "e2e")
    assert finished(study) == 6
    timings = [t.user_attrs["record"]["timings"] for t in study.trials]
    assert all(t["recalibrate_s"] > 0 for t in timings)  # tiny_cnn has batch norms
    # the Pareto JSON has the documented fields
    assert main(["pareto", "--study", "e2e", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows, "front must not be empty"
    for key in (
        "trial",
        "accuracy",
        "test_accuracy",
        "macs",
        "flops",
        "fps",
        "params",
        "size_bytes",
        "config",
    ):
        assert all(key in r for r in rows), key
    assert all(r["test_accuracy"] is not None for r in rows)
    assert all(r["flops"] == 2 * r["macs"] for r in rows)
    # MLflow: one parent, 6 children; the children tagged pareto=true are exactly the front
    mlflow.set_tracking_uri(f"sqlite:///{isolated / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["e2e"], output_format="list")
    parents = [r for r in runs if r.data.tags.get("prunetune.role") == "search"]
    children = [r for r in runs if r.data.tags.get("prunetune.role") == "trial"]
    assert len(parents) == 1 and len(children) == 6
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    tagged = sorted(int(c.data.tags["trial"]) for c in children if c.data.tags["pareto"] == "true")
    assert tagged == sorted(r["trial"] for r in rows)
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(parents[0].info.run_id)}
    assert {
        "pareto_front.csv",
        "pareto_front.json",
        "pareto_front.png",
        "pareto_front.html",
    } <= arts
    assert parents[0].info.status == "FINISHED"
    assert "base_accuracy" in parents[0].data.metrics and "hypervolume" in parents[0].data.metrics


def test_resume_counts_the_budget_and_adds_children(isolated):
    assert main(search_args("resume", 3)) == 0
    assert main(search_args("resume", 5)) == 0
    study = load_study(isolated, "resume")
    assert finished(study) == 5 and len(study.trials) == 5
    assert main(search_args("resume", 5)) == 0  # nothing left: no new trial
    assert len(load_study(isolated, "resume").trials) == 5
    mlflow.set_tracking_uri(f"sqlite:///{isolated / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["resume"], output_format="list")
    children = [r for r in runs if r.data.tags.get("prunetune.role") == "trial"]
    assert sorted(int(c.data.tags["trial"]) for c in children) == [0, 1, 2, 3, 4]


def _running_after_complete(isolated, name):
    """A condition for wait_for: >= 2 trials complete and one running with its params. One storage
    for every poll and one read of the trials per poll, so a poll stays short on a loaded machine
    (two opened storages per poll missed every 2-s trial of a search under CI load)."""
    storage = []

    def cond():
        if not storage:
            if not (isolated / "mlruns" / "optuna.db").exists():
                return False
            storage.append(make_storage(f"sqlite:///{isolated / 'mlruns' / 'optuna.db'}"))
        try:
            trials = study_store.load(storage[0], name).get_trials(deepcopy=False)
        except KeyError:  # the study is not created yet
            return False
        running = [t for t in trials if t.state.name == "RUNNING"]
        complete = sum(t.state.name == "COMPLETE" for t in trials)
        return complete >= 2 and len(running) == 1 and bool(running[0].params)

    return cond


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_search_resumes_to_the_budget(isolated, sig):
    args = search_args("intr", 6, "--epochs", "8", "--subset", "1000")
    proc = start_cli(args, isolated)
    assert wait_for(_running_after_complete(isolated, "intr")), proc.communicate()[1]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Re-run the same command to resume" in err, err[-3000:]
        assert "Traceback" not in err
    before = load_study(isolated, "intr")
    done_before = finished(before)
    assert 2 <= done_before < 6
    again = run_cli(args, isolated)
    assert again.returncode == 0, again.stderr
    study = load_study(isolated, "intr")
    assert finished(study) == 6
    interrupted = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 1
    replays = [t for t in study.trials if t.user_attrs.get("replay_of") is not None]
    assert len(replays) == 1 and replays[0].params == interrupted[0].params
    _assert_one_parent_with_timed_children(isolated, "intr", finished=6)


def _assert_one_parent_with_timed_children(cwd, study: str, *, finished: int) -> None:
    """After an interrupted search and its resume: one FINISHED parent run holding every trial's
    child run, each lasting its trial's recorded total_s (not the ms a write takes), and one
    registered version, from that finished parent."""
    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(study).experiment_id
    [parent] = client.search_runs([exp], "tags.`prunetune.role` = 'search'")
    assert parent.info.status == "FINISHED"
    children = client.search_runs([exp], "tags.`prunetune.role` = 'trial'")
    assert len(children) == finished and {c.data.tags["mlflow.parentRunId"] for c in children} == {
        parent.info.run_id
    }
    for c in children:
        took = (c.info.end_time - c.info.start_time) / 1000
        total = c.data.metrics["time_total_s"]
        assert 0.5 * total <= took <= total + 5.0, (took, total)
    [version] = client.search_model_versions(f"name = 'prunetune-{study}'")
    assert version.run_id == parent.info.run_id


def test_two_processes_share_a_study_without_duplicates(isolated):
    assert run_cli(search_args("shared", 1), isolated).returncode == 0  # create study + base cache
    args = search_args("shared", 9)
    procs = [start_cli(args, isolated) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "locked" not in err.lower()
    study = load_study(isolated, "shared")
    assert finished(study) == 9 and len(study.trials) == 9
    workers = {t.user_attrs.get("worker") for t in study.trials[1:]}
    assert len(workers) == 2, "both processes must have run trials"


def test_same_seed_same_trials(isolated):
    assert main(search_args("det-a", 4, "--seed", "3")) == 0
    assert main(search_args("det-b", 4, "--seed", "3")) == 0
    done = lambda name: [t for t in load_study(isolated, name).trials if t.state.is_finished()]  # noqa: E731
    a, b = done("det-a"), done("det-b")
    assert len(a) == len(b) == 4
    assert [t.params for t in a] == [t.params for t in b]
    acc = lambda ts: [t.user_attrs["record"]["metrics"]["accuracy"] for t in ts]  # noqa: E731
    assert acc(a) == acc(b)


@pytest.mark.parametrize("sampler", ["nsga2", "nsga3", "gp", "random"])
def test_every_sampler_runs_a_multi_objective_search(isolated, sampler):
    assert main(search_args(f"s-{sampler}", 5, "--strategy", "search", "--sampler", sampler)) == 0
    study = load_study(isolated, f"s-{sampler}")
    assert finished(study) == 5 and all(t.state.name == "COMPLETE" for t in study.trials)


def test_constraints_reject_before_training_and_filter_the_front(isolated, capsys):
    """--max-flops rejects configs before fine-tuning; --min-accuracy keeps the front feasible."""
    assert main(search_args("c", 5, "--max-flops", "40000", "--min-accuracy", "0.3")) == 0
    study = load_study(isolated, "c")
    rejected = [t for t in study.trials if t.state.name == "PRUNED"]
    assert rejected, "the uniform-0.5 warm-start trial (45.8k FLOPs) breaks --max-flops"
    for t in rejected:
        rec = t.user_attrs["record"]
        assert rec["state"] == "rejected" and "max_flops" in rec["reason"]
        assert "finetune_s" not in rec["timings"]
    capsys.readouterr()
    assert main(["pareto", "--study", "c", "--format", "json"]) == 0
    for row in json.loads(capsys.readouterr().out):
        assert row["flops"] <= 40000 and row["accuracy"] >= 0.3


def ended_early(*procs: subprocess.Popen, note: object = "") -> str:
    """Which of `procs` ended, with its exit code and the tail of its stderr (for a failure)."""
    lines = [str(note)]
    for proc in (p for p in procs if p.poll() is not None):
        lines.append(f"pid {proc.pid} exited {proc.returncode}: {proc.communicate()[1][-2000:]}")
    return "\n".join(lines)


def test_a_survivor_finishes_the_budget_when_the_other_search_is_killed(isolated):
    """Two searches on one study; whichever runs a trial while the other has finished one is
    killed with kill -9: its RUNNING trial is failed and re-run by the survivor, which ends with
    exactly --trials finished (stale trials used to be recovered only at start-up: 5 of 6, exit 0).
    Trials train 4 epochs on 1,500 images, so a RUNNING trial lasts long enough to be seen and
    killed whichever process started first; one study object is polled (a poll that reopened the
    storage took long enough on a loaded CI machine to miss every overlap: 8 of 8 finished)."""
    slow = ("--epochs", "4", "--subset", "1500")
    assert run_cli(search_args("killed", 1, *slow), isolated).returncode == 0  # study + base
    polled = load_study(isolated, "killed")
    procs = [start_cli(search_args("killed", 8, *slow), isolated) for _ in range(2)]

    def mine(proc: subprocess.Popen, state: str, trials: list | None = None) -> list:
        if trials is None:
            trials = polled.get_trials(deepcopy=False)
        worker = lambda t: str(t.user_attrs.get("worker", ""))  # noqa: E731
        return [t for t in trials if t.state.name == state and worker(t).endswith(f":{proc.pid}")]

    def both_alive() -> bool:
        return all(p.poll() is None for p in procs)

    found: list[tuple[subprocess.Popen, subprocess.Popen]] = []

    def overlap() -> bool:
        """Whether a victim runs a trial while a survivor has finished one (kept in `found`):
        one read of the trials per poll, so the pair is the one this poll saw."""
        trials = polled.get_trials(deepcopy=False)
        for victim, survivor in (procs, procs[::-1]):
            if mine(survivor, "COMPLETE", trials) and mine(victim, "RUNNING", trials):
                found.append((victim, survivor))
                return True
        return False

    wait_for(lambda: not both_alive() or overlap(), timeout=300, step=0.05)
    assert both_alive(), ended_early(*procs, note=states(load_study(isolated, "killed")))
    assert found, states(load_study(isolated, "killed"))
    victim, survivor = found[0]
    victim.kill()
    victim.communicate(timeout=60)
    cut = mine(victim, "RUNNING") + [
        t for t in mine(victim, "FAIL") if t.user_attrs.get("interrupted")
    ]
    assert cut, "the victim's trial ended before kill -9 reached it"
    _, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err
    study = load_study(isolated, "killed")
    assert finished(study) == 8, states(study)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    replays = [t for t in study.trials if t.user_attrs.get("replay_of") is not None]
    assert len(replays) == 1 and replays[0].user_attrs["worker"].endswith(f":{survivor.pid}")
