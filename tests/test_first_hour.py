"""A new user's first hour (issue 18): the near-chance warning, the default study of `pareto` /
`export`, a `--help` that does not import torch, and the MLflow run structure (one parent per
study that resumes reopen, child runs with real durations, registry versions only for finished
searches and never two for one trial). Real Optuna studies and MLflow stores; no mocks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import optuna
import pytest
import torch

from prunetune.cli import main
from prunetune.config import SearchSettings
from prunetune.errors import PrunetuneError
from prunetune.search.api import near_chance, resolve_study
from prunetune.search.records import COMPLETE, TrialRecord
from prunetune.search.results import SearchResult
from prunetune.search.tracking import PARENT_ATTR, MlflowTracker, registered_name
from prunetune.search.tracking.registry import version_of
from tests.helpers import FAST, run_cli

REPO = Path(__file__).resolve().parent.parent


# -- --help and argument errors without torch ------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [["--help"], ["search", "--help"], ["search", "--trials", "x"], ["nope"]],
    ids=["help", "search-help", "bad-value", "bad-command"],
)
def test_help_and_argument_errors_do_not_import_torch(argv):
    code = (
        "import sys\nfrom prunetune.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'optuna', 'mlflow', 'prunetune.compress') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_the_public_api_still_loads_on_use():
    """`import prunetune` loads no torch; the first use of a public name imports its module and
    gives that module's function (checked for every name by tests/test_public_api.py)."""
    code = (
        "import sys, prunetune\nassert 'torch' not in sys.modules\nf = prunetune.prune\n"
        "m = sys.modules['prunetune.compress.prune']\n"
        "assert f is m.prune and 'torch' in sys.modules\n"
        "try:\n    prunetune.no_such_thing\nexcept AttributeError:\n    print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


# -- near-chance warning --------------------------------------------------------------------------
def test_near_chance_threshold_is_chance_plus_a_stated_margin():
    assert (
        near_chance(0.20, 10)
        and "--base-epochs" in near_chance(0.20, 10)
        and "--checkpoint" in near_chance(0.2, 10)
    )
    assert near_chance(0.24, 10) is None  # 10 classes: warned below 23.5 %
    assert near_chance(0.55, 2) and near_chance(0.58, 2) is None  # 2 classes: below 57.5 %
    assert near_chance(0.95, 10) is None


@pytest.mark.slow
def test_an_untrained_base_model_is_warned_about_before_the_first_trial(isolated):
    from prunetune.data import create_dataset
    from prunetune.models import build_for

    torch.manual_seed(0)
    ckpt = isolated / "untrained.pt"
    torch.save(build_for("tiny_cnn", create_dataset("digits")).state_dict(), ckpt)
    got = run_cli(
        ["search", *FAST, "--checkpoint", str(ckpt), "--study", "chance", "--trials", "1"], isolated
    )
    assert got.returncode == 0, got.stderr
    lines = got.stderr.splitlines()
    warned = [i for i, line in enumerate(lines) if "near chance" in line]
    first_trial = next(i for i, line in enumerate(lines) if "trials finished" in line)
    assert len(warned) == 1 and warned[0] < first_trial, got.stderr


# -- default study of pareto / export --------------------------------------------------------------
def _studies(cwd: Path, *names: str) -> str:
    url = f"sqlite:///{cwd / 'mlruns' / 'optuna.db'}"
    (cwd / "mlruns").mkdir(exist_ok=True)
    for name in names:
        optuna.create_study(study_name=name, storage=url, directions=["maximize"])
    return url


def test_default_study_is_the_only_one_or_the_search_default(tmp_path):
    url = _studies(tmp_path, "alpha")
    assert resolve_study(None, url) == "alpha"
    assert resolve_study("given", url) == "given"
    _studies(tmp_path, SearchSettings().study_name)
    assert resolve_study(None, url) == "mnist_net-mnist5k"


def test_no_default_study_lists_the_studies_in_one_line(isolated, capsys):
    _studies(isolated, "alpha", "beta")
    for cmd in (["pareto"], ["export", "--out", "x"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert (
            err.startswith("prunetune: error: which study?")
            and "alpha, beta" in err
            and err.count("\n") == 1
        )
    assert not (isolated / "x").exists()


def test_pareto_without_a_store_creates_nothing(isolated, capsys):
    assert main(["pareto"]) == 2
    assert "run `prunetune search` first" in capsys.readouterr().err
    assert not (isolated / "mlruns").exists()


# -- MLflow run structure --------------------------------------------------------------------------
class _Space:
    """A search space's two views the tracker logs (a real SearchSpace needs a model)."""

    def summary(self) -> dict:
        return {"groups": 1}

    def to_dict(self) -> dict:
        return {"groups": {"g": [0.0, 0.5]}}


def _setup(trials: int) -> SimpleNamespace:
    cfg = SearchSettings.from_flat(model="tiny_cnn", dataset="digits", study="runs", trials=trials)
    return SimpleNamespace(
        config=cfg, space=_Space(), base_metrics={"accuracy": 0.9, "flops": 100.0}
    )


def _result(tmp: Path, n: int) -> SearchResult:
    records = []
    for i in range(n):
        weights = tmp / f"trial-{i:05d}.pt"
        weights.write_bytes(b"w")
        records.append(
            TrialRecord(
                number=i,
                state=COMPLETE,
                params={},
                weights=str(weights),
                metrics={
                    "accuracy": 0.9 - 0.1 * i,
                    "flops": 50.0 - 10 * i,
                    "fps": 2000.0 + 500 * i,
                    "speedup": 2.0 + 0.5 * i,
                },
                timings={"total_s": 90.0 + i},
            )
        )
    return SearchResult(
        "runs",
        ["accuracy", "flops"],
        {"accuracy": 0.9, "flops": 100.0, "fps": 1000.0},
        records,
        front=list(range(n)),
        knee=0,
    )


def test_resumes_reopen_one_parent_and_register_once_when_finished(isolated):
    uri = f"sqlite:///{isolated / 'mlflow.db'}"
    study = optuna.create_study(study_name="runs", directions=["maximize", "minimize"])
    client = mlflow.MlflowClient(uri)

    first = MlflowTracker(uri)
    first.on_search_start(_setup(2), study)
    result = _result(isolated, 1)
    first.on_trial_end(result.records[0], study)
    first.on_search_end(result, study, outcome="interrupted")  # Ctrl-C: KILLED, nothing registered
    assert client.get_run(first.parent_run_id).info.status == "KILLED"
    assert study.user_attrs[PARENT_ATTR] == first.parent_run_id
    assert client.search_model_versions(f"name = '{registered_name('runs')}'") == []

    for trials in (2, 3):  # the resume, then a re-run of the finished search with a larger budget
        again = MlflowTracker(uri)
        again.on_search_start(_setup(trials), study)
        assert again.parent_run_id == first.parent_run_id
        assert client.get_run(again.parent_run_id).info.status == "RUNNING"
        result = _result(isolated, trials)
        again.on_search_end(result, study, outcome="finished")
    parent = client.get_run(first.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["budget"] == "3"
    runs = client.search_runs([parent.info.experiment_id])
    assert [r.data.tags["prunetune.role"] for r in runs].count("search") == 1
    children = [r for r in runs if r.data.tags["prunetune.role"] == "trial"]
    assert sorted(int(c.data.tags["trial"]) for c in children) == [0, 1, 2]  # 1, 2 backfilled
    for c in children:  # durations from the trial's timings, not the milliseconds a write takes
        assert c.info.end_time - c.info.start_time == pytest.approx(
            1000 * c.data.metrics["time_total_s"], abs=50
        )
    versions = client.search_model_versions(f"name = '{registered_name('runs')}'")
    assert [v.tags["trial"] for v in versions] == [
        "0"
    ]  # the knee, once, though two searches finished
    assert versions[0].run_id == parent.info.run_id and "mlflow.note.content" in parent.data.tags


def test_a_deleted_parent_is_replaced_not_reopened(isolated):
    uri = f"sqlite:///{isolated / 'mlflow.db'}"
    study = optuna.create_study(study_name="runs", directions=["maximize", "minimize"])
    first = MlflowTracker(uri)
    first.on_search_start(_setup(1), study)
    first.client.delete_run(first.parent_run_id)
    second = MlflowTracker(uri)
    second.on_search_start(_setup(1), study)
    assert (
        second.parent_run_id != first.parent_run_id
        and study.user_attrs[PARENT_ATTR] == second.parent_run_id
    )
    second.on_search_end(_result(isolated, 1), study, outcome="finished")


def test_search_with_export_leaves_registration_to_the_export(isolated):
    uri = f"sqlite:///{isolated / 'mlflow.db'}"
    study = optuna.create_study(study_name="runs", directions=["maximize", "minimize"])
    tracker = MlflowTracker(uri, register=False)
    tracker.on_search_start(_setup(1), study)
    tracker.on_search_end(_result(isolated, 1), study, outcome="finished")
    assert tracker.client.search_model_versions(f"name = '{registered_name('runs')}'") == []
    assert version_of(tracker.client, "runs", 0) is None


def test_resolve_study_error_is_a_user_error(tmp_path):
    with pytest.raises(PrunetuneError, match="which study"):
        resolve_study(None, _studies(tmp_path, "a", "b"))


# -- numbers explained where printed ---------------------------------------------------------------
def test_int8_verification_is_reported_as_top1_agreement_not_a_float_diff():
    from dataclasses import replace

    from prunetune.export import verification_text
    from prunetune.export.card import Verification

    v = Verification(
        images=256,
        inputs="test images",
        max_abs_diff=3.19,
        tolerance=None,
        output_range=40.0,
        top1_agreement=0.992,
        outputs_match=True,
    )
    text = verification_text(v, int8=True)
    assert "top-1 agreement with the float model 99.20%" in text and "needs >= 95%" in text
    assert "8.0% of the logits' range" in text and "(match)" not in text
    fp = verification_text(
        replace(v, max_abs_diff=4e-6, tolerance=4e-3, top1_agreement=1.0), int8=False
    )
    assert fp.startswith("float check pass") and "within 4.0e-03" in fp


def test_fps_column_is_speedup_times_the_base_fps_and_hypervolume_is_on_0_1(tmp_path):
    from prunetune.search import pareto
    from prunetune.search.results import front_rows

    result = _result(tmp_path, 2)
    rows = {r["trial"]: r for r in front_rows(result)}
    assert rows[1]["fps"] == pytest.approx(2.5 * 1000.0) and rows[1]["fps_measured"] == 2500.0
    points = [r.metrics for r in result.records]
    base = {"accuracy": 0.9, "flops": 100.0, "fps": 1000.0}
    hv = pareto.unit_hypervolume_history(points, ["accuracy", "flops", "fps"], base)
    assert 0.0 < hv[0] <= hv[-1] <= 1.0
    # trial 0 alone: error 0.1, FLOPs 0.5 of the base, latency 1/2 of the base -> 0.9 x 0.5 x 0.5
    assert hv[0] == pytest.approx(0.9 * 0.5 * 0.5)
    perfect = pareto.unit_hypervolume_history(
        [{"accuracy": 1.0, "flops": 1e-12, "speedup": 1e12, "fps": 1.0}],
        ["accuracy", "flops", "fps"],
        base,
    )
    assert perfect[0] == pytest.approx(1.0)


# -- optuna-dashboard: a second view of the same studies -------------------------------------------
def test_optuna_dashboard_serves_a_prunetune_study(isolated):
    import json
    import shutil
    import socket
    import time
    import urllib.request

    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("optuna-dashboard is not installed (pip install -e .[dev])")
    url = _studies(isolated, "mnist_net-mnist5k")
    study = optuna.load_study(study_name="mnist_net-mnist5k", storage=url)
    study.set_user_attr("objectives", ["accuracy"])
    for acc in (0.5, 0.9):
        study.add_trial(optuna.trial.create_trial(values=[acc]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [exe, url, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        detail, end = None, time.time() + 90
        while detail is None and time.time() < end and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    [summary] = json.load(r)["study_summaries"]
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}?after=0", timeout=5
                ) as r:
                    detail = json.load(r)
            except OSError:
                time.sleep(0.5)
        assert detail is not None, "optuna-dashboard did not answer within 90 s"
        assert detail["name"] == "mnist_net-mnist5k" and len(detail["trials"]) == 2
        assert [t["values"] for t in detail["best_trials"]] == [[0.9]]
    finally:
        proc.terminate()
        proc.wait(30)
