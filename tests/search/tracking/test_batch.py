"""MLflow entities from plain values and batched writes (prunetune.search.tracking.batch), against
a real MLflow store."""

from __future__ import annotations

import mlflow

from prunetune.search.tracking.batch import as_metrics, flat_params, log_batch, metric_steps


def test_nested_settings_become_dotted_params_cut_to_mlflows_limit():
    params = flat_params("cfg.", {"a": 1, "b": {"c": [1, 2], "d": None}, "long": "x" * 7000})
    assert params == {"cfg.a": "1", "cfg.b.c": "[1, 2]", "cfg.b.d": "None", "cfg.long": "x" * 6000}


def test_metrics_leave_out_missing_values_and_keep_their_steps():
    assert [(m.key, m.value, m.step) for m in as_metrics({"a": 1, "b": None})] == [("a", 1.0, 0)]
    steps = metric_steps([("loss", 0.5, 0), ("loss", 0.25, 1)])
    assert [(m.key, m.value, m.step) for m in steps] == [("loss", 0.5, 0), ("loss", 0.25, 1)]


def test_more_than_one_batch_of_writes_all_arrive(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("batch"))
    params = {f"p{i}": str(i) for i in range(150)}  # over 100 params a call
    metrics = metric_steps([("m", float(i), i) for i in range(1200)])  # over 1000 items a call
    log_batch(client, run.info.run_id, params=params, metrics=metrics, tags={"t": "1"})
    client.set_terminated(run.info.run_id)
    data = client.get_run(run.info.run_id).data
    assert data.params == params and data.tags["t"] == "1"
    assert len(client.get_metric_history(run.info.run_id, "m")) == 1200
