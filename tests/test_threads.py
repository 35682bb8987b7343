"""Training threads (prunetune.threads): auto probes 1 and N threads in a run's first steps and
keeps the faster; a pinned count wins; the choice is recorded with the trial, the config and in
MLflow; a bad value is one line, exit 2. Step times are staged with sleeps here (the decision
rule is tested, not the machine's speed: that is bench/busy_machine.py)."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from prunetune import threads
from prunetune.cli import main
from prunetune.models import Recipe, train
from tests.helpers import FAST, load_study, search_args


@pytest.fixture
def two_threads():
    """torch at 2 threads (N = 2 for auto), whatever the machine, restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def _run(chooser: threads.ThreadChooser, steps: int, slow: int | None = None) -> list[int]:
    """Run `steps` steps through `chooser`; a step at `slow` threads sleeps 20 ms, others 2 ms.
    Returns the thread count each step ran at."""
    seen = []
    with chooser.running():
        for _ in range(steps):
            with chooser.step():
                seen.append(torch.get_num_threads())
                time.sleep(0.02 if seen[-1] == slow else 0.002)
    return seen


@pytest.mark.parametrize("slow, winner", [(2, 1), (1, 2)])
def test_auto_alternates_then_keeps_the_faster_count(two_threads, slow, winner):
    chooser = threads.ThreadChooser(threads.AUTO, steps=30)
    seen = _run(chooser, 30, slow=slow)
    assert seen[:8] == [1, 2] * 4  # a warm-up step at each, then 1, 2, 1, 2, 1, 2
    assert seen[8:] == [winner] * 22
    assert chooser.decision.threads == winner and chooser.decision.policy == "auto"
    assert set(chooser.decision.step_ms) == {1, 2}
    assert torch.get_num_threads() == 2  # torch's own setting back afterwards


def test_a_pinned_count_wins(two_threads):
    chooser = threads.ThreadChooser(3, steps=30)
    assert _run(chooser, 30, slow=3) == [3] * 30
    assert chooser.decision == threads.Decision(3, "pinned")


def test_a_short_run_does_not_probe_and_takes_the_latest_decision(two_threads):
    _run(threads.ThreadChooser(threads.AUTO, steps=30), 30, slow=1)  # decides 2
    chooser = threads.ThreadChooser(threads.AUTO, steps=5)
    assert _run(chooser, 5) == [2] * 5 and chooser.decision.step_ms == {}
    with threads.decided(threads.AUTO) as n:  # batch-norm re-estimation, scoring, screening
        assert n == 2 == torch.get_num_threads()


def test_train_reports_its_decision_to_watchers(two_threads):
    data = TensorDataset(torch.randn(64, 4), torch.arange(64) % 2)
    with threads.watch() as seen:
        hist = train(nn.Linear(4, 2), data, Recipe(epochs=1, batch_size=4), seed=0, train_threads=1)
    assert seen == [hist.threads]
    assert hist.threads.as_context() == {"train_threads": 1, "train_threads_policy": "pinned"}


def _child_runs(cwd, study: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(study)
    return client, exp, client.search_runs([exp.experiment_id], "tags.`prunetune.role` = 'trial'")


@pytest.mark.parametrize("setting, policy", [("2", "pinned"), ("auto", "auto")])
def test_the_chosen_count_is_recorded_with_the_trial_config_and_mlflow(isolated, setting, policy):
    assert main(search_args("thr", 1, "--train-threads", setting)) == 0
    study = load_study(isolated, "thr")
    record = study.trials[0].user_attrs["record"]
    chosen = record["context"]["train_threads"]
    assert record["context"]["train_threads_policy"] == policy
    assert chosen == 2 if policy == "pinned" else chosen >= 1
    assert study.user_attrs["config"]["train_threads"] == (2 if policy == "pinned" else "auto")
    client, exp, children = _child_runs(isolated, "thr")
    assert children[0].data.metrics["train_threads"] == chosen
    assert children[0].data.params["train_threads_policy"] == policy
    assert {"load_1m", "cpus"} <= set(children[0].data.metrics)  # the machine's load at FPS time
    parent = client.search_runs([exp.experiment_id], "tags.`prunetune.role` = 'search'")[0]
    assert parent.data.params["train_threads"] == str(study.user_attrs["config"]["train_threads"])


@pytest.mark.parametrize(
    "argv",
    [
        ["search", *FAST, "--train-threads", "0"],
        ["search", *FAST, "--train-threads", "two"],
        ["search", *FAST, "--train-threads", "-1"],
        ["train", "--model", "tiny_cnn", "--train-threads", "x"],
    ],
)
def test_a_bad_value_is_one_line_exit_2(isolated, capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train_threads" in err and "Traceback" not in err
    assert not (isolated / "mlruns").exists()


def test_a_bad_value_in_a_config_file_is_one_line(isolated, capsys):
    (isolated / "c.yaml").write_text("train_threads: 1.5\n")
    assert main(["search", *FAST, "--config", "c.yaml"]) == 2
    assert "train_threads must be auto or a whole number >= 1" in capsys.readouterr().err
