"""prunetune.run_search around a model and a training loop defined here, not in prunetune's zoo."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import prunetune
from prunetune.errors import CheckpointError, ConfigError
from prunetune.search.study import load_existing

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[2]


class TwoOutputs(nn.Module):
    """A model whose forward returns (logits, features) or {"logits": ...}: refused with one
    line."""

    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        features = self.conv(x).mean((2, 3))
        return {"logits": self.head(features)} if self.as_dict else (self.head(features), features)


class OwnNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 12, 3, padding=1),
            nn.BatchNorm2d(12),
            nn.ReLU(),
            nn.Conv2d(12, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.body(x).flatten(1))


def _digits():
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    return (x[:1000], y[:1000]), (x[1000:1400], y[1000:1400])


TRAIN, VAL = _digits()


def _fit(model, epochs, lr=1e-2):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for i in range(0, 1000, 100):
            opt.zero_grad()
            nn.functional.cross_entropy(
                model(TRAIN[0][i : i + 100]), TRAIN[1][i : i + 100]
            ).backward()
            opt.step()
    model.eval()


def finetune(model):
    _fit(model, 1, lr=5e-3)


def evaluate(model):
    with torch.no_grad():
        logits = model(VAL[0])
    return {
        "accuracy": float((logits.argmax(1) == VAL[1]).float().mean()),
        "confidence": float(logits.softmax(1).max(1).values.mean()),
    }


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = OwnNet()
    _fit(model, 8)
    return model


# the search of the `searched` fixture, but its model and trials
OWN = dict(
    example_input=VAL[0][:1],
    train_fn=finetune,
    eval_fn=evaluate,
    objectives=("accuracy", "flops"),
    study_name="own",
    bits=[32],
    fps_repeats=3,
    seed=0,
)


@pytest.fixture(scope="module")
def searched(trained, tmp_path_factory):
    """One 4-trial search of OwnNet (its folder, the SearchRun)."""
    folder = tmp_path_factory.mktemp("api")
    with contextlib.chdir(folder):
        run = prunetune.run_search(trained, trials=4, **OWN)
    return folder, run


def test_front_knee_and_exact_reload_of_a_user_model(searched):
    folder, run = searched
    assert len(run.records) == 4 and all(r.state == "complete" for r in run.records)
    assert run.front and run.knee.number in [r.number for r in run.front]
    for (
        rec
    ) in run.front:  # the reloaded model is the trial's: same accuracy with the user's own eval_fn
        assert evaluate(run.model(rec))["accuracy"] == rec.metrics["accuracy"]
    assert run.knee.metrics["flops"] < run.result.base_metrics["flops"] or len(run.front) == 1
    assert (folder / "mlruns" / "optuna.db").is_file() and (
        folder / "mlruns" / "mlflow.db"
    ).is_file()


def test_trials_dataframe_flags_the_front(searched):
    _, run = searched
    df = run.trials_dataframe()
    assert len(df) == 4 and set(df.loc[df["front"], "number"]) == {r.number for r in run.front}
    assert "accuracy" in df.columns and "flops" in df.columns


def test_export_of_a_user_model_is_verified(searched, tmp_path):
    folder, run = searched
    with contextlib.chdir(folder):
        card = run.export(run.knee, tmp_path / "out", fmt="onnx")
    assert card.model_path.is_file() and card.data.verification.outputs_match
    assert (tmp_path / "out" / "card.md").is_file()
    assert card.data.compressed.macs < card.data.base.macs
    exported = prunetune.load_compressed(tmp_path / "out", base_model=run.setup.base.model)
    assert (
        evaluate(exported)["accuracy"] == run.knee.metrics["accuracy"]
    )  # the exported model is the knee


def test_a_user_models_file_is_refused_without_its_base(searched):
    _, run = searched
    with pytest.raises(CheckpointError, match="in-memory model"):
        prunetune.load_compressed(run.knee.weights)


def test_an_extra_metric_from_eval_fn_is_an_objective(trained):
    run = prunetune.run_search(
        trained,
        example_input=VAL[0][:1],
        train_fn=finetune,
        eval_fn=evaluate,
        objectives={"confidence": "maximize", "flops": "minimize"},
        trials=3,
        study_name="own-metric",
        bits=[32],
        fps_repeats=3,
        seed=1,
    )
    study = load_existing("sqlite:///mlruns/optuna.db", "own-metric")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert run.result.objectives == ["confidence:maximize", "flops"]
    for t in study.get_trials():
        assert t.values[0] == pytest.approx(run.result.record(t.number).metrics["confidence"])
    from prunetune.search.results import csv_text

    assert csv_text(run.result).splitlines()[0].startswith("trial,accuracy,confidence,")
    assert run.result.base_metrics["confidence"] > 0 and run.result.hypervolume


def _fails_on_pruned(what):
    """An eval_fn that works on the base model (first call) and then does `what`."""
    calls = []

    def eval_fn(model):
        calls.append(1)
        if len(calls) == 1:
            return evaluate(model)
        return what(model)

    return eval_fn


def test_a_user_function_that_fails_fails_its_trial_with_the_reason(trained):
    """The search goes on past failed trials (what each failure's reason says, for train_fn and
    eval_fn alike: tests/search/test_workload.py)."""
    run = prunetune.run_search(
        trained,
        example_input=VAL[0][:1],
        train_fn=finetune,
        eval_fn=_fails_on_pruned(lambda m: 1 / 0),
        trials=2,
        study_name="own-fails",
        bits=[32],
        fps_repeats=3,
    )
    assert [r.state for r in run.records] == ["failed", "failed"]
    assert all("eval_fn raised ZeroDivisionError" in r.reason for r in run.records)
    assert run.front == [] and run.knee is None


def test_an_objective_metric_eval_fn_does_not_return_fails_the_trial(trained):
    calls = []

    def eval_fn(model):  # "map" for the base only
        calls.append(1)
        return {**evaluate(model), **({"map": 0.5} if len(calls) == 1 else {})}

    run = prunetune.run_search(
        trained,
        example_input=VAL[0][:1],
        train_fn=finetune,
        eval_fn=eval_fn,
        objectives={"map": "maximize", "flops": "minimize"},
        trials=1,
        study_name="own-map",
        bits=[32],
        fps_repeats=3,
    )
    assert run.records[0].state == "failed" and "eval_fn returned no 'map'" in run.records[0].reason


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"model": "resnet18"}, "model must be a torch.nn.Module"),
        ({"example_input": torch.zeros(8)}, "example_input must be a tensor"),
        ({"example_input": torch.zeros(1, 3, 8, 8)}, "does not accept example_input"),
        ({"epochs": 3}, "run_search does not take epochs"),
        ({"objectives": {"map": "up"}}, "direction must be 'maximize' or 'minimize'"),
        ({"objectives": ("accuracy", "mAP")}, "unknown objective"),
        ({"strategy": "sensitivity"}, "strategy 'sensitivity'"),
        ({"screen": 4, "strategy": "search"}, "screening scores configs without fine-tuning"),
        ({"device": "cuda"}, "run_search does not take device"),
        (
            {"train_threads": 2},
            "run_search does not take train_threads",
        ),  # train_fn's threads are its own
        ({"importance": ["taylor"]}, "importance 'taylor' needs labelled batches"),
        ({"train_fn": 3}, "train_fn must be callable"),
        ({"example_input": torch.zeros(0, 1, 8, 8)}, "example_input has an empty dimension"),
        (
            {"example_input": torch.zeros(1, 1, 8, 8, device="meta")},
            "example_input is on the meta device",
        ),
        ({"model": OwnNet().to("meta")}, "the model's weights are on the meta device"),
        ({"model": "tuple"}, "the model's forward returns a tuple, not one tensor"),
        ({"model": "dict"}, "the model's forward returns a dict, not one tensor"),
        (
            {"eval_fn": lambda m: {**evaluate(m), "big": 10**400}},
            "metric 'big' is too large for a float",
        ),
    ],
)
def test_bad_arguments_are_one_clear_error_before_anything_is_written(
    trained, tmp_path, kwargs, message
):
    if kwargs.get("model") in ("tuple", "dict"):
        kwargs = {**kwargs, "model": TwoOutputs(as_dict=kwargs["model"] == "dict")}
    args = {
        "model": trained,
        "example_input": VAL[0][:1],
        "train_fn": finetune,
        "eval_fn": evaluate,
        "trials": 1,
        **kwargs,
    }
    with pytest.raises(Exception, match=message) as info:
        prunetune.run_search(**args)
    assert isinstance(info.value, (ConfigError, prunetune.errors.UnknownNameError)), info.value
    assert not (tmp_path / "mlruns").exists()


def _returning(extra):
    def eval_fn(model):
        return {**evaluate(model), **extra}

    return eval_fn


@pytest.mark.parametrize(
    "eval_fn,message",
    [
        (_returning({"flops": 1.0}), "returned 'flops': a name prunetune's own record uses"),
        (_returning({"accuracy": 97.0}), "accuracy must be a fraction in [0, 1]"),
        (_returning({"map@50": 0.3}), "metric names must be 1-100 letters"),
    ],
)
def test_eval_fn_results_that_would_corrupt_the_front_are_refused_on_the_base(
    trained, tmp_path, eval_fn, message
):
    with pytest.raises(
        prunetune.errors.PrunetuneError, match=message.replace("[", r"\[").replace("]", r"\]")
    ):
        prunetune.run_search(
            trained, example_input=VAL[0][:1], train_fn=finetune, eval_fn=eval_fn, trials=1
        )
    assert not (tmp_path / "mlruns").exists()


def test_an_objective_the_base_does_not_report_is_refused_before_any_trial(trained, tmp_path):
    with pytest.raises(ConfigError, match="the base model: eval_fn returned no 'map'"):
        prunetune.run_search(
            trained,
            example_input=VAL[0][:1],
            train_fn=finetune,
            eval_fn=evaluate,
            trials=1,
            objectives={"map": "maximize", "flops": "minimize"},
        )
    assert not (tmp_path / "mlruns").exists()


def test_a_failing_test_fn_keeps_the_finished_search(trained):
    calls = []

    def flaky_test(model):  # works on the base, fails on every front member
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("test data gone")
        return evaluate(model)

    run = prunetune.run_search(
        trained,
        example_input=VAL[0][:1],
        train_fn=finetune,
        eval_fn=evaluate,
        test_fn=flaky_test,
        trials=2,
        study_name="own-test-fails",
        bits=[32],
        fps_repeats=3,
    )
    study = load_existing("sqlite:///mlruns/optuna.db", "own-test-fails")
    assert run.front and not run.result.test_accuracy
    assert all(
        "test_fn raised RuntimeError: test data gone" in v
        for v in study.user_attrs["test_errors"].values()
    )


def test_resuming_a_study_from_other_weights_is_refused(searched, trained):
    """Refused before any trial (resuming with the same model: the architecture test below)."""
    folder, _ = searched
    other = OwnNet()
    other.load_state_dict(trained.state_dict())
    with torch.no_grad():
        other.head.bias += 0.01
    with contextlib.chdir(folder), pytest.raises(ConfigError, match="from other weights of OwnNet"):
        prunetune.run_search(other, trials=5, **OWN)
    with contextlib.chdir(folder):
        assert len(load_existing("sqlite:///mlruns/optuna.db", "own").trials) == 4


def test_a_model_with_nothing_to_search_is_one_error(tmp_path):
    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))

    with pytest.raises(ConfigError, match="nothing to search in Linear"):
        prunetune.run_search(
            Linear(), example_input=VAL[0][:1], train_fn=finetune, eval_fn=evaluate, bits=[32]
        )


def test_the_cli_takes_only_the_standard_objectives(tmp_path, capsys):
    from prunetune.cli import main

    assert main(["search", "--objectives", "accuracy,map:maximize"]) == 2
    err = capsys.readouterr().err
    assert "unknown objective 'map:maximize'" in err and "Traceback" not in err
    assert not (tmp_path / "mlruns").exists()


def test_ray_refuses_functions_it_cannot_ship(trained):
    lock = threading.Lock()

    def train_fn(model):
        with lock:
            finetune(model)

    with pytest.raises(ConfigError, match="with backend='ray', train_fn must be picklable"):
        prunetune.run_search(
            trained,
            example_input=VAL[0][:1],
            train_fn=train_fn,
            eval_fn=evaluate,
            trials=1,
            backend="ray",
        )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["optuna", "ray"])
def test_the_example_script_runs_with_both_backends(tmp_path, backend):
    """examples/own_training_loop.py as a user runs it (its model and loop live in __main__)."""
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "own_training_loop.py"),
            "--trials",
            "3",
            "--backend",
            backend,
            "--export",
            str(tmp_path / "out"),
        ],
        cwd=tmp_path,
        text=True,
        capture_output=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "knee: trial" in out.stdout and "reloaded knee: test accuracy" in out.stdout
    assert (
        "verified: float check pass" in out.stdout and (tmp_path / "out" / "model.onnx").is_file()
    )


def _changes_the_head_of_the_second(model):
    """A train_fn that fine-tunes, and on its second call replaces the head by
    Linear-ReLU-Linear."""
    finetune(model)
    _changes_the_head_of_the_second.calls += 1
    if _changes_the_head_of_the_second.calls == 2:
        model.head = nn.Sequential(
            nn.Linear(model.head.in_features, 32), nn.ReLU(), nn.Linear(32, 10)
        )


def _widens_the_stride(model):
    """A train_fn that keeps every weight's shape but halves the first conv's output (stride 2)."""
    finetune(model)
    model.body[0].stride = (2, 2)


def test_a_train_fn_that_changes_the_architecture_fails_its_trial_alone(trained):
    """The trial is judged on the model train_fn left: a changed architecture fails that trial with
    the reason (its file would not rebuild it); the others complete, the search and its resume end
    normally (the reload at the end used to raise CheckpointError: Missing key(s))."""
    _changes_the_head_of_the_second.calls = 0
    kwargs = dict(
        example_input=VAL[0][:1],
        eval_fn=evaluate,
        objectives=("accuracy", "flops"),
        study_name="own-arch",
        bits=[32],
        fps_repeats=3,
        seed=3,
    )
    run = prunetune.run_search(
        trained, train_fn=_changes_the_head_of_the_second, trials=3, **kwargs
    )
    states = [r.state for r in run.records]
    assert states.count("failed") == 1 and states.count("complete") == 2, states
    failed = next(r for r in run.records if r.state == "failed")
    assert "train_fn changed the model's architecture" in failed.reason and "head" in failed.reason
    assert run.front and run.knee is not None
    for r in run.records:
        if r.state == "complete":
            assert r.metrics["flops"] == 2 * prunetune.count_macs(run.model(r.number), VAL[0][:1])
    resumed = prunetune.run_search(trained, train_fn=_widens_the_stride, trials=4, **kwargs)
    last = resumed.records[-1]
    assert last.state == "failed" and "stride" in last.reason, last.reason


@pytest.mark.parametrize("name", ["threads", "cpus", "speedup"])  # run context, measured
def test_a_user_metric_never_overwrites_prunetunes_own_record(trained, tmp_path, capsys, name):
    """eval_fn metrics named threads / runtime / device used to overwrite the study's base context
    (`pareto` printed "7.0 thread(s), runtime 1.0"), one named cpus was overwritten by the
    machine's CPU count on the base (silently dropped), time_total_s was replaced by the real
    timing in MLflow, `state` was lost in trials_dataframe(): each is refused by name, on the base,
    before anything is written (every reserved name: tests/search/test_workload.py)."""
    with pytest.raises(
        prunetune.errors.PrunetuneError, match=f"returned '{name}': a name prunetune's own"
    ):
        prunetune.run_search(
            trained,
            example_input=VAL[0][:1],
            train_fn=finetune,
            eval_fn=_returning({name: 7.0}),
            trials=1,
        )
    assert not (tmp_path / "mlruns").exists()
    from prunetune.cli import main

    assert main(["pareto"]) == 2  # nothing to read: no study was made
    assert "no study storage" in capsys.readouterr().err


def test_an_eval_fn_calling_sys_exit_fails_its_trial_and_the_search_goes_on(trained):
    """Decided: the trial fails with the reason (it used to stay RUNNING: sys.exit ended the
    process)."""

    def exits_on_pruned(model):
        exits_on_pruned.calls += 1
        if exits_on_pruned.calls == 2:
            raise SystemExit(3)
        return evaluate(model)

    exits_on_pruned.calls = 0
    run = prunetune.run_search(
        trained,
        example_input=VAL[0][:1],
        train_fn=finetune,
        eval_fn=exits_on_pruned,
        trials=2,
        study_name="own-exit",
        bits=[32],
        fps_repeats=3,
        strategy="search",
    )  # eval_fn's 2nd call is trial 0's (no proxy)
    assert [r.state for r in run.records] == ["failed", "complete"]
    assert run.records[0].reason == "eval_fn called sys.exit(3)"


def test_a_set_of_objectives_is_refused(trained, tmp_path):
    """Decided: refused (its order, the study's objective order, would follow the hash seed)."""
    with pytest.raises(ConfigError, match="objectives must be ordered"):
        prunetune.run_search(
            trained,
            example_input=VAL[0][:1],
            train_fn=finetune,
            eval_fn=evaluate,
            objectives={"accuracy", "flops"},
            trials=1,
        )
    assert not (tmp_path / "mlruns").exists()
