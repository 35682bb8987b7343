"""Shared fixtures: every test runs in its own working directory (so ./mlruns is private), base
models are cached once per session, and a test that leaks an active MLflow run fails."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def prunetune_home(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("prunetune-home"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests (other test processes share the 2 cores); use with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, prunetune_home):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRUNETUNE_HOME", prunetune_home)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    yield tmp_path
    import sys

    if "mlflow" in sys.modules:
        import mlflow

        leaked = mlflow.active_run()
        if leaked is not None:
            mlflow.end_run()
            pytest.fail(f"test leaked an active MLflow run {leaked.info.run_id}")
