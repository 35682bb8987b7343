"""Faults inside trials are recorded and the search goes on; loading is safe; no shell strings."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import pytest

from prunetune.cli import main
from tests.helpers import load_study, open_storage_after, race

FAULTY = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class Faulty(nn.Module):
    """Healthy while unpruned; once its first conv is pruned, training hits the injected fault."""

    def __init__(self, fault, num_classes):
        super().__init__()
        self.fault = fault
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 8 * 8, num_classes)

    def forward(self, x):
        h = F.relu(self.conv1(x))
        if self.training and self.conv1.out_channels < 8:
            if self.fault == "raise":
                raise RuntimeError("injected fault in forward")
            if self.fault == "oom":
                raise MemoryError()
            if self.fault == "nan":
                h = h * float("nan")
        return self.fc(torch.flatten(F.relu(self.conv2(h)), 1))


def raising(num_classes):
    return Faulty("raise", num_classes)


def oom(num_classes):
    return Faulty("oom", num_classes)


def nan(num_classes):
    return Faulty("nan", num_classes)
'''


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("raising", "RuntimeError: injected fault in forward"),
        ("oom", "MemoryError"),
        ("nan", "diverged"),
    ],
)
def test_a_failing_trial_is_recorded_and_the_search_goes_on(
    isolated, monkeypatch, capsys, fault, reason
):
    (isolated / "faulty_nets.py").write_text(FAULTY)
    monkeypatch.syspath_prepend(str(isolated))
    argv = [
        "search",
        "--model",
        f"faulty_nets:{fault}",
        "--dataset",
        "digits",
        "--base-epochs",
        "1",
        "--epochs",
        "1",
        "--subset",
        "100",
        "--fps-repeats",
        "3",
        "--study",
        "f",
        "--trials",
        "3",
        "--bits",
        "32",
    ]
    assert main(argv) == 0
    study = load_study(isolated, "f")
    trials = [t for t in study.trials if t.state.is_finished()]
    assert len(trials) == 3, "the search goes on after failures"
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert [t.number for t in failed[:2]] == [0, 1]  # warm start: uniform 0.5 and 0.75 prune conv1
    for t in failed:
        assert reason in t.user_attrs["fail_reason"]
    mlflow.set_tracking_uri(f"sqlite:///{isolated / 'mlruns' / 'mlflow.db'}")
    children = mlflow.search_runs(
        experiment_names=["f"], output_format="list", filter_string="tags.state = 'failed'"
    )
    assert len(children) == len(failed) and all(reason in c.data.tags["reason"] for c in children)
    assert all(c.info.status == "FAILED" for c in children)
    assert "trial 0 failed: " in capsys.readouterr().err


SWALLOWING = '''
import os
import signal
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Swallowing(nn.Module):
    """Ctrl-C arrives while code that swallows KeyboardInterrupt runs (as library clean-up code
    run by the garbage collector does): in the first training step of a pruned model."""

    fired = False

    def __init__(self, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, num_classes)

    def forward(self, x):
        if self.training and self.conv1.out_channels < 8 and not Swallowing.fired:
            Swallowing.fired = True
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            except KeyboardInterrupt:
                pass
        return self.fc(torch.flatten(F.relu(self.conv1(x)), 1))


def build(num_classes):
    return Swallowing(num_classes)
'''


def test_ctrl_c_swallowed_by_other_code_still_stops_the_search(isolated, monkeypatch, capsys):
    (isolated / "swallowing_nets.py").write_text(SWALLOWING)
    monkeypatch.syspath_prepend(str(isolated))
    argv = [
        "search",
        "--model",
        "swallowing_nets:build",
        "--dataset",
        "digits",
        "--base-epochs",
        "1",
        "--epochs",
        "2",
        "--subset",
        "100",
        "--fps-repeats",
        "3",
        "--study",
        "s",
        "--trials",
        "4",
        "--bits",
        "32",
        "--strategy",
        "search",
    ]  # a warm start is trial 0 (targets: its proxy first)
    assert main(argv) == 130
    assert "Re-run the same command to resume" in capsys.readouterr().err
    trials = load_study(isolated, "s").trials
    assert [t.number for t in trials if t.user_attrs.get("interrupted")] == [
        0
    ]  # the pruned warm start
    assert all(t.state.name == "WAITING" for t in trials[1:]), (
        "no trial ran after the interrupted one"
    )


def test_searches_starting_together_on_a_new_storage_do_not_collide(tmp_path):
    """Two `prunetune search` processes started at once in a fresh folder both create the Optuna
    schema; unguarded, one of them fails ("table ... already exists", "UNIQUE constraint")."""
    for rep in range(3):
        url = f"sqlite:///{tmp_path / f'new-{rep}' / 'optuna.db'}"
        assert race(open_storage_after, url, 4, timeout=120) == ["ok"] * 4


SOURCE = Path(__file__).resolve().parents[1] / "prunetune"


def test_every_checkpoint_load_is_weights_only():
    calls = []
    for path in SOURCE.rglob("*.py"):
        for m in re.finditer(r"torch\.load\(([^)]*)\)", path.read_text()):
            calls.append((path.name, m.group(1)))
    assert calls, "expected torch.load calls to check"
    unsafe = [c for c in calls if "weights_only=True" not in c[1]]
    assert not unsafe, unsafe


# the one exec: a constant that clears CPython's exit-by-SIGINT flag
ALLOWED = {SOURCE / "__main__.py": 'exec("pass")'}


def test_no_shell_strings_and_no_eval():
    pattern = re.compile(
        r"shell\s*=\s*True|os\.system\(|os\.popen\(|(?<![.\w])eval\(|(?<![.\w])exec\(|pickle\.loads?\("
    )
    offenders = []
    for path in SOURCE.rglob("*.py"):
        text = path.read_text()
        if pattern.search(text.replace(ALLOWED[path], "") if path in ALLOWED else text):
            offenders.append(path.name)
    assert not offenders, offenders


def test_user_code_is_imported_only_from_an_explicit_module_function(isolated, monkeypatch):
    """A zoo-looking name never imports a module; only NAME:FUNCTION does."""
    (isolated / "sneaky.py").write_text("raise SystemExit('imported!')\n")
    monkeypatch.syspath_prepend(str(isolated))
    from prunetune.errors import UnknownNameError
    from prunetune.models import build_for

    with pytest.raises(UnknownNameError):
        build_for("sneaky", (1, 8, 8), 10)


def test_cifar_batches_refuse_code(tmp_path):
    """A CIFAR batch that smuggles a callable is refused, not executed."""
    import os
    import pickle

    from prunetune.data import create_dataset
    from prunetune.errors import DataNotFoundError

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}))
    with pytest.raises(DataNotFoundError, match="refusing to load"):
        create_dataset("cifar10", data_root=tmp_path, download=False)
    assert not (Path.cwd() / "pwned").exists()


def test_every_trial_failing_alike_stops_the_search_with_one_line(isolated, monkeypatch, capsys):
    """Every trial prunes conv1 (--ratio-min 0.3), so every trial hits the injected fault: the
    search stops after FAILURE_STREAK of them, not after the whole budget, with a one-line error;
    each failed trial keeps its full traceback (not only the innermost frame)."""
    from prunetune.search.records import FAILURE_STREAK

    (isolated / "faulty_nets.py").write_text(FAULTY)
    monkeypatch.syspath_prepend(str(isolated))
    argv = [
        "search",
        "--model",
        "faulty_nets:raising",
        "--dataset",
        "digits",
        "--base-epochs",
        "1",
        "--epochs",
        "1",
        "--subset",
        "100",
        "--fps-repeats",
        "3",
        "--study",
        "streak",
        "--trials",
        "12",
        "--bits",
        "32",
        "--ratio-min",
        "0.3",
        "--sampler",
        "random",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(
        rf"prunetune: error: {FAILURE_STREAK} trials in a row failed with RuntimeError: "
        r"injected fault in forward \(at faulty_nets\.py:\d+\); fix the cause and re-run "
        r"\(finished trials are kept\)",
        err[-1],
    ), err[-1]
    trials = load_study(isolated, "streak").trials
    assert [t.state.name for t in trials] == ["FAIL"] * FAILURE_STREAK
    for t in trials:
        tb = t.user_attrs["traceback"]
        assert tb.startswith("Traceback (most recent call last)")
        for frame in (
            "objective.py",
            "training.py",
            "faulty_nets.py",
        ):  # from the trial down to the fault
            assert frame in tb
        assert tb.rstrip().endswith("RuntimeError: injected fault in forward")


def test_two_setups_never_share_a_base_runner(isolated):
    """The base model's runner belongs to its search setup and is keyed by runtime and threads: a
    setup on another runtime with the same base model object (before: cache keyed by id(model)),
    or a new setup, builds its own."""
    import dataclasses

    from prunetune.config import SearchSettings
    from prunetune.search.objective import prepare_search
    from prunetune.search.speed import base_runner

    cfg = SearchSettings.from_flat(
        model="tiny_cnn", dataset="digits", base_epochs=2, fps_repeats=3, bits=[32]
    )
    first = prepare_search(cfg, weights_dir=isolated / "w")
    runner = base_runner(first)
    assert base_runner(first) is runner and runner.runtime == "torch"
    onnx = dataclasses.replace(
        first,
        config=dataclasses.replace(
            cfg, measurement=dataclasses.replace(cfg.measurement, runtime="onnxruntime")
        ),
    )
    assert onnx.base.model is first.base.model
    assert base_runner(onnx).runtime == "onnxruntime"
    assert base_runner(dataclasses.replace(first)) is not runner
    import pickle

    assert pickle.loads(pickle.dumps(first)).runners == {}  # Ray ships setups without runners


def test_a_replayed_trial_keeps_its_own_number_and_the_replayed_seed(isolated):
    """A trial an earlier run left RUNNING (killed between ask and tag) is re-run by the next run:
    the replay is a new trial whose record and weights file carry its own number, with
    `replay_of` naming the trial it re-runs and that trial's seed."""
    from prunetune.config import SearchSettings
    from prunetune.search.objective import prepare_search, trial_seed
    from prunetune.paths import weights_dir
    from prunetune.search.optuna_runner import run_search
    from prunetune.search.study import open_study

    cfg = SearchSettings.from_flat(
        model="tiny_cnn",
        dataset="digits",
        base_epochs=2,
        epochs=1,
        subset=200,
        fps_repeats=3,
        bits=[32],
        trials=2,
        study="replay",
        keep_all_weights=True,
        seed=3,
    )
    setup = prepare_search(cfg, weights_dir=weights_dir(cfg.study_name))
    lost = open_study(cfg, setup.space, setup.base_metrics).ask()  # trial 0: its process is killed
    setup.space.suggest(lost)  # ... after it drew its params, before it was tagged or told
    run_search(cfg)
    trials = load_study(isolated, "replay").trials
    replay = next(t for t in trials if t.user_attrs.get("replay_of") == lost.number)
    assert replay.number != lost.number and replay.state.name == "COMPLETE"
    assert replay.params == trials[lost.number].params and replay.params
    rec = replay.user_attrs["record"]
    assert rec["replay_of"] == lost.number and rec["seed"] == trial_seed(3, lost.number)
    assert (
        Path(rec["weights"]).name == f"trial-{replay.number:05d}.pt"
        and Path(rec["weights"]).is_file()
    )
    assert not (weights_dir(cfg.study_name) / f"trial-{lost.number:05d}.pt").exists()


@pytest.mark.slow
def test_ray_search_stops_too_when_every_trial_fails_alike(isolated, prunetune_home):
    """The Ray backend: no trial is asked for after the streak; the trials in flight finish, then
    the same one-line error (exit 2); the failed trials keep their tracebacks."""
    import os

    from prunetune.search.records import FAILURE_STREAK
    from tests.helpers import run_cli

    (isolated / "faulty_nets.py").write_text(FAULTY)
    env = {
        "PYTHONPATH": os.pathsep.join([str(isolated), os.environ.get("PYTHONPATH", "")]),
        "PRUNETUNE_HOME": prunetune_home,
    }
    argv = [
        "search",
        "--model",
        "faulty_nets:raising",
        "--dataset",
        "digits",
        "--base-epochs",
        "1",
        "--epochs",
        "1",
        "--subset",
        "100",
        "--fps-repeats",
        "3",
        "--study",
        "rs",
        "--trials",
        "12",
        "--bits",
        "32",
        "--ratio-min",
        "0.3",
        "--sampler",
        "random",
        "--backend",
        "ray",
        "--workers",
        "2",
    ]
    proc = run_cli(argv, isolated, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert (
        f"prunetune: error: {FAILURE_STREAK} trials in a row failed with RuntimeError: "
        "injected fault"
    ) in proc.stderr.strip().splitlines()[-1]
    trials = load_study(isolated, "rs").trials
    assert (
        FAILURE_STREAK <= len(trials) <= FAILURE_STREAK + 1
    )  # + the one in flight at the 5th failure
    assert all(
        t.state.name == "FAIL" and "faulty_nets.py" in t.user_attrs["traceback"] for t in trials
    )
