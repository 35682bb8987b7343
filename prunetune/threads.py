"""How many intra-op threads training uses: measured per training run, not assumed.

Why: on a machine where another process wants a core, torch's default (one OpenMP thread per
core) collapses. OpenMP threads wait for each other at every op's end; when one is descheduled
for a time slice the op waits for it, and a pruned net's ops last microseconds. On 2 cores a
small CNN's training step took 14 ms with 2 threads and 22 ms with 1 alone, but 52 ms with 2
threads (22 ms with 1) beside one busy process, and 160-190 ms (22 ms) beside a second trainer.

The policy ("auto", the default): a training run (`ThreadChooser`) alternates its first steps
between 1 thread and N (torch's own thread count in this process: one per core, OMP_NUM_THREADS,
or what Ray reserved for the trial): one warm-up step at each, then 1, N, 1, N, ... PROBE_ROUNDS
times; the median step time of each decides the count for the rest of the run. N must beat
one thread's median by 10 % (PREFER_ONE) to win: fewer threads leave cores to others.
No step is wasted (every step trains), and every run decides again, so the choice follows the
machine's load and the pruned model's size. Short passes (batch-norm re-estimation, evaluation,
screening) use the process's latest decision (`decided`). A pinned count (`--train-threads N`)
is used as it is. The decision of a run is published to `watch()`ers (the trial records it).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from prunetune.config import AUTO_THREADS as AUTO

PROBE_ROUNDS = 3  # timed steps per candidate, after one warm-up step each
PREFER_ONE = 0.9  # N threads win only when their median step is below 0.9x one thread's
_latest: dict[str, int] = {}  # the process's latest auto decision ("threads")
_watchers: list[list[Decision]] = []


@dataclass(frozen=True)
class Decision:
    """What one training run used: `threads` after the probe (or throughout), `policy` ("auto"
    or "pinned") and, when it probed, the median step time in ms per candidate count."""

    threads: int
    policy: str
    step_ms: dict[int, float] = field(default_factory=dict)

    def as_context(self) -> dict:
        """Flat, JSON- and MLflow-ready: train_threads, train_threads_policy, train_step_ms_<N>t."""
        return {
            "train_threads": self.threads,
            "train_threads_policy": self.policy,
            **{f"train_step_ms_{n}t": round(ms, 3) for n, ms in sorted(self.step_ms.items())},
        }


def candidates(setting: int | str | None) -> tuple[int, ...]:
    """The counts a run may use: (setting,) when pinned; (1, N) for auto (N: torch's current
    count; just (1,) when that is 1); torch's current count when `setting` is None."""
    current = torch.get_num_threads()
    if setting is None:
        return (current,)
    if setting == AUTO:
        return (1, current) if current > 1 else (1,)
    return (int(setting),)


def _publish(decision: Decision) -> None:
    if decision.policy == AUTO:
        _latest["threads"] = decision.threads
    for seen in _watchers:
        seen.append(decision)


@contextlib.contextmanager
def watch() -> Iterator[list[Decision]]:
    """Inside the block, every training run's Decision is appended to the list yielded."""
    seen: list[Decision] = []
    _watchers.append(seen)
    try:
        yield seen
    finally:
        _watchers.remove(seen)


@contextlib.contextmanager
def decided(setting: int | str | None) -> Iterator[int]:
    """torch at the pinned count, or (auto) at the process's latest auto decision, else 1 thread
    (never catastrophic under load); None leaves torch as it is. Restored afterwards."""
    old = torch.get_num_threads()
    n = old if setting is None else _latest.get("threads", 1) if setting == AUTO else int(setting)
    n = min(n, max(candidates(setting))) if setting == AUTO else n
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(old)


class ThreadChooser:
    """One training run's thread policy. `with chooser.running():` around the run, `with
    chooser.step():` around each step's compute; `decision` afterwards. A run of fewer than
    `min_steps` steps (or on a GPU: `probe=False`) does not probe: it uses `decided(setting)`'s
    count."""

    def __init__(self, setting: int | str | None, *, steps: int, probe: bool = True) -> None:
        self.options = candidates(setting)
        self.policy = AUTO if setting == AUTO else "pinned" if setting is not None else "torch"
        rounds = [*self.options] * (1 + PROBE_ROUNDS)
        self.plan = rounds if probe and len(self.options) > 1 and steps >= 2 * len(rounds) else []
        self.samples: dict[int, list[float]] = {n: [] for n in self.options}
        self.setting, self.index, self.threads = setting, 0, self.options[0]
        self.decision: Decision | None = None

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The run: torch's thread count restored afterwards, the decision published."""
        with decided(self.setting) as n:
            self.threads = n if not self.plan else self.plan[0]
            try:
                yield
            finally:
                self.decision = self.decision or Decision(self.threads, self.policy)
                _publish(self.decision)

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """One step at the count the plan (or the decision) says; probe steps are timed."""
        i, self.index = self.index, self.index + 1
        probing = i < len(self.plan)
        if probing and self.plan[i] != torch.get_num_threads():
            torch.set_num_threads(self.plan[i])
        t = time.perf_counter()
        yield
        if probing and i >= len(self.options):  # the first round is the warm-up
            self.samples[self.plan[i]].append(time.perf_counter() - t)
        if probing and i == len(self.plan) - 1:
            self._decide()

    def _decide(self) -> None:
        """The fastest count by median step time; N must beat one thread by PREFER_ONE."""
        med = {n: 1000 * statistics.median(s) for n, s in self.samples.items()}
        weight = {n: 1.0 if n == 1 else 1 / PREFER_ONE for n in med}
        self.threads = min(med, key=lambda n: med[n] * weight[n])
        torch.set_num_threads(self.threads)
        self.decision = Decision(self.threads, self.policy, med)
