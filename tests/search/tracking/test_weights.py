"""Trial weights fetched from a study's MLflow runs (prunetune.search.tracking.weights), on a real
store: the newest search run that logged the file; None, creating nothing, where none did."""

from __future__ import annotations

import mlflow

from prunetune.search.tracking.weights import fetch_front_weights


def test_the_weights_come_from_the_newest_search_run_that_logged_them(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert fetch_front_weights(uri, "s", "trial_1.pt", tmp_path / "w") is None  # no store
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("s")
    for start, content in ((1_000, b"older"), (2_000, b"newer")):
        tags = {"prunetune.role": "search"}
        run = client.create_run(exp, start_time=start, tags=tags).info.run_id
        (tmp_path / "trial_1.pt").write_bytes(content)
        client.log_artifact(run, str(tmp_path / "trial_1.pt"), artifact_path="front_models")
    got = fetch_front_weights(uri, "s", "trial_1.pt", tmp_path / "w")
    assert got == tmp_path / "w" / "trial_1.pt" and got.read_bytes() == b"newer"
    assert fetch_front_weights(uri, "s", "trial_2.pt", tmp_path / "x") is None
    assert fetch_front_weights(uri, "other", "trial_1.pt", tmp_path / "x") is None
    assert not (tmp_path / "x").exists()
