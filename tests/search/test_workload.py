"""The data side of a trial (prunetune.search.workload): a user's train_fn / eval_fn / test_fn and
what they may return, checked without a search (the search around them:
tests/search/test_python_api.py)."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from torch import nn

from prunetune.measure import machine_load
from prunetune.search.records import reserved_name
from prunetune.search.workload import UserFunctionError, UserWorkload, metrics_of
from prunetune.threads import Decision

RESERVED = [
    "threads",
    "runtime",
    "device",
    "time_total_s",
    "state",
    "total_s",
    "number",
    "front",
    "knee",
    "reason",
    "base_accuracy",
    "params_x",
    "fps_measured",
    "finetune_loss",
    "speedup",
    "flops",
    "test_accuracy",
    "cpus",
    "load_1m",
    "runnable",
    "train_threads",
    "train_threads_policy",
    "train_step_ms_2t",
]


def _net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 2))


def _returning(out):
    return lambda model: out


def test_metrics_are_numbers_by_name_and_the_model_comes_back_on_the_cpu_in_eval_mode():
    model = _net().train()
    got = metrics_of("eval_fn", _returning({"accuracy": 1, "map": torch.tensor(0.5)}), model)
    assert got == {"accuracy": 1.0, "map": 0.5} and all(type(v) is float for v in got.values())
    assert not model.training


@pytest.mark.parametrize("name", RESERVED)
def test_a_name_prunetunes_own_record_uses_is_refused(name):
    """Context (threads, runtime, device), measured metrics, timings and table columns: a user
    metric of that name would overwrite or hide prunetune's own value."""
    with pytest.raises(UserFunctionError, match=f"returned '{name}': a name prunetune's own"):
        metrics_of("eval_fn", _returning({"accuracy": 0.5, name: 7.0}), _net())


def test_every_context_name_prunetune_records_is_refused():
    """The load read when FPS is measured and the fine-tune's thread decision sit beside the
    metrics (the base's, a trial's context): a user metric named like one would be overwritten
    by the machine's value (a metric "cpus" was, silently, on the base) or hide it."""
    decision = Decision(threads=2, policy="auto", step_ms={1: 5.0, 2: 3.0})
    for name in (*machine_load(reads=1), *decision.as_context()):
        assert reserved_name(name), name


@pytest.mark.parametrize(
    "out, message",
    [
        ({"acc": 0.5}, "eval_fn must return a dict with an 'accuracy' entry"),
        ([("accuracy", 0.5)], "eval_fn must return a dict"),
        ({"accuracy": 97.0}, r"accuracy must be a fraction in \[0, 1\], got 97.0"),
        ({"accuracy": 0.5, "map@50": 0.3}, "metric names must be 1-100 letters"),
        ({"accuracy": 0.5, 3: 0.3}, "metric names must be 1-100 letters"),
        ({"accuracy": 0.5, "m": "high"}, "metric 'm' is not a number: 'high'"),
        ({"accuracy": 0.5, "big": 10**400}, "metric 'big' is too large for a float"),
        ({"accuracy": 0.5, "m": float("nan")}, "metric 'm' is not finite: nan"),
    ],
)
def test_results_that_would_corrupt_the_front_are_refused(out, message):
    with pytest.raises(UserFunctionError, match=message):
        metrics_of("eval_fn", _returning(out), _net())


def _raises(model):
    raise RuntimeError("loader broke")


def _exits(model):
    sys.exit(3)


def _interrupted(model):
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "train_fn, reason",
    [
        (_raises, "train_fn raised RuntimeError: loader broke"),
        (_exits, "train_fn called sys.exit(3)"),
        (lambda m: _net(), "train_fn returned another module"),
    ],
)
def test_a_failing_train_fn_is_a_user_function_error_with_the_reason(train_fn, reason):
    workload = UserWorkload(train_fn, _returning({"accuracy": 0.5}))
    with pytest.raises(UserFunctionError) as info:
        workload.finetune(_net(), seed=0, device="cpu")
    assert str(info.value).startswith(reason)


def test_ctrl_c_in_a_users_function_is_not_a_failure_of_it():
    workload = UserWorkload(_interrupted, _interrupted)
    with pytest.raises(KeyboardInterrupt):
        workload.finetune(_net(), seed=0, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        workload.evaluate(_net(), "cpu")


def test_train_fn_runs_seeded_and_leaves_the_callers_rng_alone():
    def train_fn(model):
        with torch.no_grad():
            model[1].weight.normal_()

    workload = UserWorkload(train_fn, _returning({"accuracy": 0.5}))
    models = [_net() for _ in range(3)]
    before = torch.random.get_rng_state()
    for model, seed in zip(models, (1, 1, 2)):
        workload.finetune(model, seed, "cpu")
    first, again, other = (m[1].weight for m in models)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_test_accuracy_is_test_fns_accuracy_or_none_without_one():
    assert UserWorkload(_raises, _raises).test_accuracy(_net()) is None
    workload = UserWorkload(_raises, _raises, test_fn=_returning({"accuracy": 0.75, "f1": 0.1}))
    assert workload.test_accuracy(_net()) == 0.75
    assert UserWorkload(_raises, _raises).importance_data(0) is None


def test_a_heavily_pruned_model_fine_tunes_at_a_larger_learning_rate():
    """The brief fine-tune's learning rate grows as the model keeps fewer of the base's MACs
    (pruned_lr): at 5 % kept, with 7 steps, Adam's steps are sqrt(7) = 2.6x the unpruned
    model's, so the weights move further from the same start; with scaling 0 they move the same."""
    from prunetune.data import create_dataset
    from prunetune.search.workload import DatasetWorkload

    bundle = create_dataset("digits")
    start = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def moved(kept: float, scaling: float) -> float:
        model = copy.deepcopy(start)
        work = DatasetWorkload(bundle, epochs=1, subset=100, lr=1e-3, batch_size=16,
                               lr_scaling=scaling, train_threads=1)  # fmt: skip
        work.finetune(model, seed=3, device="cpu", kept=kept)
        return float(torch.cat([(a - b).flatten() for a, b in zip(
            model.parameters(), start.parameters(), strict=True)]).norm())  # fmt: skip

    assert moved(0.05, 1.5) > 2 * moved(1.0, 1.5)
    assert moved(0.05, 0.0) == pytest.approx(moved(1.0, 0.0))
