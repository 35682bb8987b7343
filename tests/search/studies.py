"""In-memory Optuna studies shaped the way prunetune stores them, for the search layer's unit tests.

Study user attrs as `study.open_study` sets them (objectives, base_metrics, constraints, test
accuracy); trials as the runners finish them (`optuna_runner.tell` and the Ctrl-C branch of its
loop): a record's `user_attrs()` on the trial, COMPLETE with the objective values, PRUNED for a
rejected trial, FAIL with `fail_reason` (and `interrupted` for Ctrl-C), RUNNING with a `worker`.
Torch-free: nothing here imports prunetune's model or compression code.
"""

from __future__ import annotations

import optuna

from prunetune.search.objectives import get_objective
from prunetune.search.records import COMPLETE, FAILED, INTERRUPTED, REJECTED, RUNNING, TrialRecord
from prunetune.search.study_store import load

optuna.logging.set_verbosity(optuna.logging.WARNING)

RATIO = optuna.distributions.FloatDistribution(0.0, 0.95, step=0.05)
BITS = optuna.distributions.CategoricalDistribution([32, 8, 6, 4])
BASE = {
    "accuracy": 0.9,
    "macs": 500,
    "flops": 1000,
    "fps": 100.0,
    "params": 2000,
    "size_bytes": 8000,
}


def new_study(
    objectives: tuple[str, ...] = ("accuracy", "flops"),
    *,
    base: dict | None = BASE,
    constraints: dict | None = None,
    name: str = "unit",
) -> optuna.Study:
    """A study in an InMemoryStorage with prunetune's study attrs (`base=None`: none stored)."""
    study = load(
        optuna.storages.InMemoryStorage(),
        name,
        directions=[get_objective(o).direction for o in objectives],
    )
    study.set_user_attr("objectives", list(objectives))
    study.set_user_attr("strategy", "search")
    if base is not None:
        study.set_user_attr("base_metrics", dict(base))
    study.set_user_attr(
        "constraints", {"min_accuracy": None, "max_flops": None, **(constraints or {})}
    )
    study.set_user_attr("config", {"seed": 0})
    return study


def params(ratio: float = 0.5, bits: int = 8) -> dict:
    return {"ratio:0": ratio, "ratio:3": ratio, "bits:0": bits, "bits:3": bits}


def record(
    number: int, state: str = COMPLETE, *, accuracy: float = 0.8, flops: float = 500, **metrics
) -> TrialRecord:
    """A record with every field set to something other than its default (round trips see them);
    metrics (accuracy, flops, macs = flops / 2 and `metrics`) when complete, else only `metrics`."""
    p = params()
    return TrialRecord(
        number=number,
        state=state,
        params=p,
        config={"ratios": {"0": 0.5, "3": 0.5}, "bits": {"0": 8, "3": 8}, "importance": "l2"},
        metrics={"accuracy": accuracy, "flops": flops, "macs": flops / 2, **metrics}
        if state == COMPLETE
        else metrics,
        timings={"compress_s": 0.1, "finetune_s": 1.5, "measure_s": 0.2, "total_s": 1.8},
        curve=[1.2, 0.7],
        reason="" if state == COMPLETE else f"{state}: why",
        weights=f"/w/trial_{number}.pt",
        seed=1000 + number,
        device="cpu",
    )


def distributions(p: dict) -> dict:
    return {k: RATIO if k.startswith("ratio:") else BITS for k in p}


def add(
    study: optuna.Study,
    rec: TrialRecord,
    *,
    worker: str | None = None,
    user_attrs: dict | None = None,
) -> optuna.trial.FrozenTrial:
    """Add `rec` as the runner would have finished it (RUNNING / INTERRUPTED: no record stored,
    as when the process died or Ctrl-C hit it mid-trial); returns the stored trial."""
    attrs = {"worker": worker} if worker else {}
    values = None
    if rec.state == RUNNING:
        state = optuna.trial.TrialState.RUNNING
    elif rec.state == INTERRUPTED:
        state = optuna.trial.TrialState.FAIL
        attrs |= {"interrupted": True, "fail_reason": "interrupted (Ctrl-C or SIGTERM)"}
    else:
        attrs |= rec.user_attrs()
        state = {
            COMPLETE: optuna.trial.TrialState.COMPLETE,
            REJECTED: optuna.trial.TrialState.PRUNED,
            FAILED: optuna.trial.TrialState.FAIL,
        }[rec.state]
        if rec.state == FAILED:
            attrs["fail_reason"] = rec.reason
        if rec.state == COMPLETE:
            values = [
                float(rec.metrics[get_objective(o).key]) for o in study.user_attrs["objectives"]
            ]
    trial = optuna.trial.create_trial(
        state=state,
        values=values,
        params=rec.params,
        distributions=distributions(rec.params),
        user_attrs=attrs | (user_attrs or {}),
    )
    study.add_trial(trial)
    stored = study.get_trials(deepcopy=False)[-1]
    assert stored.number == rec.number, "add records in number order, from 0"
    return stored
