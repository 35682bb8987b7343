"""TrialRecord: what one trial produced. Every layer (runners, Pareto, MLflow, export) passes these.

Optuna's storage is the source of truth: a record is rebuilt from a FrozenTrial's values and user
attributes (`record_from_trial`), so nothing about a trial lives only in memory.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

COMPLETE, FAILED, REJECTED, RUNNING, INTERRUPTED = "complete", "failed", "rejected", "running", "interrupted"


@dataclass
class TrialRecord:
    """One trial. `metrics` holds accuracy (validation), macs, flops, bitops, params, size_bytes,
    fps, latency_ms, fps_spread, speedup (vs base, measured side by side); `timings` holds
    compress_s, finetune_s, measure_s, total_s; `curve` the fine-tune loss per epoch."""

    number: int
    state: str
    params: dict
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    curve: list[float] = field(default_factory=list)
    reason: str = ""
    weights: str | None = None
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def user_attrs(self) -> dict:
        """What is stored on the Optuna trial (JSON-able)."""
        d = self.as_dict()
        d.pop("number")
        d.pop("params")
        return {"record": d}


def record_from_trial(frozen) -> TrialRecord:
    """Rebuild a TrialRecord from an optuna FrozenTrial."""
    stored = dict(frozen.user_attrs.get("record", {}))
    state = frozen.state.name
    if state == "RUNNING":
        stored["state"] = RUNNING
    elif state == "FAIL":
        stored["state"] = INTERRUPTED if frozen.user_attrs.get("interrupted") else FAILED
        stored.setdefault("reason", frozen.user_attrs.get("fail_reason", "failed"))
    elif state == "PRUNED":
        stored["state"] = REJECTED
    stored.setdefault("state", COMPLETE if state == "COMPLETE" else state.lower())
    params = {k: v for k, v in frozen.params.items()}
    return TrialRecord(number=frozen.number, params=params, **stored)
