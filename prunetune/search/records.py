"""TrialRecord: what one trial produced. Every layer (runners, Pareto, MLflow, export) passes these.

Optuna's storage is the source of truth: a record is rebuilt from a FrozenTrial's values and user
attributes (`record_from_trial`), so nothing about a trial lives only in memory.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

from prunetune.errors import PrunetuneError

COMPLETE, FAILED, REJECTED, RUNNING, INTERRUPTED = (
    "complete",
    "failed",
    "rejected",
    "running",
    "interrupted",
)
# the metrics a trial records, in table order: "accuracy" (validation, from the workload), then
# what prunetune measures itself (test accuracy of front members, costs, speed)
METRIC_KEYS = (
    "accuracy",
    "test_accuracy",
    "macs",
    "flops",
    "bitops",
    "params",
    "size_bytes",
    "fps",
    "latency_ms",
    "fps_spread",
    "speedup",
)
MEASURED_KEYS = METRIC_KEYS[1:]
# the conditions the base model and each trial ran under, not results (the study's base context,
# TrialRecord.context): where FPS was measured (runtime, threads, device), the machine's load at
# that time (measure.machine_load) and the fine-tune's thread decision (threads.Decision)
CONTEXT_KEYS = (
    "runtime",
    "threads",
    "device",
    "load_1m",
    "runnable",
    "cpus",
    "train_threads",
    "train_threads_policy",
)
CONTEXT_PREFIXES = ("train_step_ms_",)
# names prunetune's own record uses besides the metrics: the run context, the timings, MLflow's
# per-trial and parent metrics, the data frame's fixed columns
TIMING_KEYS = ("compress_s", "finetune_s", "recalibrate_s", "measure_s", "total_s")
RESERVED_NAMES = frozenset(
    (
        *MEASURED_KEYS,
        *CONTEXT_KEYS,
        *TIMING_KEYS,
        "fps_measured",
        "finetune_loss",
        "budget",
        "tracking_s",
        "trial_s",
        "tracking_share",
        "number",
        "trial",
        "state",
        "front",
        "knee",
        "reason",
        "config",
        "params",
        "seed",
        "weights",
    )
)
RESERVED_PREFIXES = ("time_", "base_", "params_", "metric_", "screen", *CONTEXT_PREFIXES)


def is_context(name: str) -> bool:
    """Whether `name` is part of a run's context (CONTEXT_KEYS, CONTEXT_PREFIXES), not a metric."""
    return name in CONTEXT_KEYS or name.startswith(CONTEXT_PREFIXES)


def reserved_name(name: str) -> bool:
    """Whether a user metric named `name` would overwrite or hide part of prunetune's own record
    (a measured metric, the run context, a timing, an MLflow metric, a trials_dataframe column):
    user metrics must be named otherwise."""
    return name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES)


TRACEBACK_CHARS = 20_000  # a failed trial's stored traceback: its last this many characters
FAILURE_STREAK = 5  # this many identical failures in a row stop a search


@dataclass
class TrialRecord:
    """One trial. `metrics` holds accuracy (validation), macs, flops, bitops, params, size_bytes,
    fps, latency_ms, fps_spread, speedup (vs base, measured side by side); `timings` holds
    compress_s, finetune_s, measure_s, total_s; `curve` the fine-tune loss per epoch. `number` is
    the trial's own (Optuna) number, which names its weights file; a trial re-running one an
    earlier run left unfinished has `replay_of` = that trial's number and uses its `seed`.
    `device`: where it trained and was evaluated. `traceback`: a failed trial's full traceback
    (stored as the Optuna user attr "traceback", not inside "record"). `context`: the conditions
    it ran under, not results: the fine-tune's thread decision (train_threads,
    train_threads_policy, train_step_ms_<N>t: prunetune.threads) and the machine's load when its
    FPS was measured (load_1m, runnable, cpus: prunetune.measure.machine_load)."""

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
    replay_of: int | None = None
    device: str = "cpu"
    traceback: str = ""
    context: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def user_attrs(self) -> dict:
        """What is stored on the Optuna trial (JSON-able)."""
        d = self.as_dict()
        d.pop("number")
        d.pop("params")
        tb = d.pop("traceback")
        return {"record": d} | ({"traceback": tb[-TRACEBACK_CHARS:]} if tb else {})


def record_from_trial(frozen) -> TrialRecord:
    """Rebuild a TrialRecord from an optuna FrozenTrial: a copy (changing the record never changes
    the trial, which may be the storage's cached one)."""
    stored = copy.deepcopy(frozen.user_attrs.get("record", {}))
    state = frozen.state.name
    if state == "RUNNING":
        stored["state"] = RUNNING
    elif state == "FAIL":
        stored["state"] = INTERRUPTED if frozen.user_attrs.get("interrupted") else FAILED
        stored.setdefault("reason", frozen.user_attrs.get("fail_reason", "failed"))
    elif state == "PRUNED":
        stored["state"] = REJECTED
    stored.setdefault("state", COMPLETE if state == "COMPLETE" else state.lower())
    stored["traceback"] = frozen.user_attrs.get("traceback", "")
    if (
        stored.get("replay_of") is None
    ):  # set on the trial when re-queued, before (or without) a record
        stored["replay_of"] = frozen.user_attrs.get("replay_of")
    params = {k: v for k, v in frozen.params.items()}
    return TrialRecord(number=frozen.number, params=params, **stored)


class RepeatedFailureError(PrunetuneError):
    """The same failure ended several trials in a row: a search stopped rather than spend its
    whole budget failing (finished trials are kept)."""


class FailureStreak:
    """Counts trials in a row that failed with the same reason (type, message and place);
    `observe` raises RepeatedFailureError at the `limit`-th. Any other outcome resets the count."""

    def __init__(self, limit: int = FAILURE_STREAK) -> None:
        self.limit, self.reason, self.count = limit, "", 0

    def observe(self, record: TrialRecord) -> None:
        if record.state != FAILED:
            self.reason, self.count = "", 0
            return
        self.count = self.count + 1 if record.reason == self.reason else 1
        self.reason = record.reason
        if self.count >= self.limit:
            raise RepeatedFailureError(
                f"{self.count} trials in a row failed with {self.reason}; fix the "
                f"cause and re-run (finished trials are kept)"
            )
