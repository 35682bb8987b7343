"""MLflow entities from plain values (params flattened, metrics at a step) and one run's writes
batched into as few commits as MLflow's limits allow."""

from __future__ import annotations

import json
import time


def flat_params(prefix: str, d: dict) -> dict[str, str]:
    """A nested dict as MLflow params: dotted keys, lists as JSON, values cut to 6000 characters."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(f"{key}.", v))
        else:
            out[key] = json.dumps(v) if isinstance(v, list | tuple) else str(v)
    return {k: v[:6000] for k, v in out.items()}


def as_metrics(values: dict[str, float | None]) -> list:
    """mlflow Metric objects at step 0, now; None values left out."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, 0) for k, v in values.items() if v is not None]


def metric_steps(series: list[tuple[str, float, int]]) -> list:
    """mlflow Metric objects from (key, value, step) triples, now."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v, step in series]


def log_batch(
    client,
    run_id: str,
    *,
    params: dict[str, str] | None = None,
    metrics: list | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """Params, metrics (mlflow Metric objects) and tags of one run in as few commits as MLflow's
    batch limits allow (100 params, 100 tags, 1000 items in all per call)."""
    from mlflow.entities import Param, RunTag

    ps = [Param(k, v) for k, v in (params or {}).items()]
    ts = [RunTag(k, v) for k, v in (tags or {}).items()]
    ms = list(metrics or [])
    while ps or ts or ms:
        p, ps = ps[:100], ps[100:]
        tg, ts = ts[:100], ts[100:]
        room = 1000 - len(p) - len(tg)
        m, ms = ms[:room], ms[room:]
        client.log_batch(run_id, metrics=m, params=p, tags=tg)
