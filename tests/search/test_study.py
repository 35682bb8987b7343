"""prunetune.search.study on in-memory Optuna studies: counting finished trials, recovery of the
trials an interrupted run left unfinished (re-queued once, as replays of their origin), the budget
lock, and the one-space / one-objective-list rule of a study. (study.py imports the space and
strategy modules, which import torch: these tests cost one torch import, nothing more.)"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import uuid

import optuna
import pytest

from prunetune.config import SearchSettings
from prunetune.errors import ConfigError
from prunetune.paths import open_lock_file
from prunetune.search.records import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    REJECTED,
    RUNNING,
    record_from_trial,
)
from prunetune.search.study import (
    _check_same,
    budget_lock,
    count_finished,
    lock_name,
    open_study,
    params_of,
    recover_unfinished,
    storage_url,
)
from prunetune.spaces import GroupSpec, SearchSpace
from tests.search.studies import add, new_study, params, record

State = optuna.trial.TrialState


def dead_worker() -> str:
    """`host:pid` of a process of this machine that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}"


def states(study: optuna.Study) -> list[tuple[State, bool, int | None]]:
    return [
        (t.state, bool(t.user_attrs.get("interrupted")), t.user_attrs.get("replay_of"))
        for t in study.get_trials(deepcopy=False)
    ]


def test_count_finished_counts_terminal_trials_but_not_interrupted_ones():
    study = new_study()
    for n, state in enumerate([COMPLETE, REJECTED, FAILED, INTERRUPTED, RUNNING, RUNNING]):
        add(study, record(n, state), worker="host:1" if state == RUNNING else None)
    study.enqueue_trial(params())  # waiting: neither
    assert count_finished(study) == (3, 2)


def test_unfinished_trials_are_requeued_once_as_replays_of_their_origin():
    study = new_study()
    me = f"{socket.gethostname()}:{os.getpid()}"
    add(study, record(0))
    add(study, record(1, RUNNING))  # killed between ask and tag: no worker
    add(study, record(2, RUNNING), worker=dead_worker())  # its process died (kill -9)
    add(study, record(3, RUNNING), worker=me)  # still running here
    add(study, record(4, RUNNING), worker="another-host:1")  # another machine's: not ours to judge
    add(study, record(5, INTERRUPTED))  # Ctrl-C
    add(study, record(6, INTERRUPTED), user_attrs={"replay_of": 1})  # a replay, interrupted again
    add(study, record(7, FAILED))  # a real failure is final
    assert recover_unfinished(study) == [1, 2, 5, 6]
    assert states(study)[:8] == [
        (State.COMPLETE, False, None),
        (State.FAIL, True, None),
        (State.FAIL, True, None),
        (State.RUNNING, False, None),
        (State.RUNNING, False, None),
        (State.FAIL, True, None),
        (State.FAIL, True, 1),
        (State.FAIL, False, None),
    ]
    assert states(study)[8:] == [(State.WAITING, False, origin) for origin in (1, 2, 5, 1)]
    assert record_from_trial(study.trials[2]).reason == "its process died (killed?)"
    assert count_finished(study) == (2, 2)
    assert recover_unfinished(study) == [] and len(study.trials) == 12  # each once
    assert study.user_attrs["requeued"] == [1, 2, 5, 6]


def test_a_requeued_trial_is_asked_again_with_its_params_and_origin():
    study = new_study()
    add(study, record(0, INTERRUPTED))
    recover_unfinished(study)
    trial = study.ask()
    space = SearchSpace(
        groups={"0": GroupSpec(8, 0.5, 0.0, 0.95), "3": GroupSpec(16, 0.5, 0.0, 0.95)},
        quant_layers=["0", "3"],
    )
    assert space.suggest(trial) == params() and trial.user_attrs["replay_of"] == 0


def test_the_budget_lock_of_an_in_memory_study_is_exclusive():
    study = new_study(name=f"unit-{uuid.uuid4().hex}")
    assert storage_url(study) == ""
    fd = open_lock_file(lock_name("", study.study_name, "budget"))
    try:
        with budget_lock(study):
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released afterwards
    finally:
        os.close(fd)


def test_lock_names_are_per_storage_and_study_and_safe_file_names():
    names = {
        lock_name(url, study, "budget")
        for url in ("sqlite:///a.db", "sqlite:///b.db")
        for study in ("s", "../t")
    }
    assert len(names) == 4
    assert all(
        n.endswith(".budget") and "/" not in n and len(n) == 24 + len(".budget") for n in names
    )
    assert lock_name("u", "s", "create") != lock_name("u", "s", "budget")


def space_of(channels: int = 8) -> SearchSpace:
    return SearchSpace(
        groups={"0": GroupSpec(channels, 1.0, 0.0, 0.95)}, quant_layers=["0"], model="tiny_cnn"
    )


def stored(objectives: list[str], space: SearchSpace, **attrs) -> optuna.Study:
    study = new_study(tuple(objectives))
    study.set_user_attr("space_fingerprint", space.fingerprint())
    for k, v in attrs.items():
        study.set_user_attr(k, v)
    return study


def test_a_study_is_resumed_only_with_its_space_strategy_and_objectives():
    # a study stored without a strategy attr is an older one: "search", the default before "targets"
    cfg = SearchSettings.from_flat(study="s", objectives=["accuracy", "flops"], strategy="search")
    _check_same(stored(["accuracy", "flops"], space_of()), cfg, space_of())  # the same: resumes
    refused = [
        (
            stored(["accuracy", "fps"], space_of()),
            space_of(),
            r"optimises \['accuracy', 'fps'\], not \['accuracy', 'flops'\]",
        ),
        (
            stored(["flops", "accuracy"], space_of()),
            space_of(),
            "optimises",
        ),  # order is the values' order
        (
            stored(["accuracy", "flops"], space_of()),
            space_of(channels=16),
            "different search space",
        ),
        (
            stored(["accuracy", "flops"], space_of(), strategy="uniform"),
            space_of(),
            "--strategy uniform, not search",
        ),
        (
            stored(["accuracy", "flops"], space_of(), screen_of="t"),
            space_of(),
            "screening study of 't'",
        ),
    ]
    for study, space, message in refused:
        with pytest.raises(ConfigError, match=message):
            _check_same(study, cfg, space)


def test_open_study_stores_the_study_attrs_and_refuses_other_objectives(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    cfg = SearchSettings.from_flat(
        study="s", storage=storage, objectives=["accuracy", "flops"], min_accuracy=0.5
    )
    study = open_study(cfg, space_of(), {"accuracy": 0.9, "flops": 1000})
    attrs = study.user_attrs
    assert attrs["objectives"] == ["accuracy", "flops"] and attrs["base_metrics"] == {
        "accuracy": 0.9,
        "flops": 1000,
    }
    assert attrs["constraints"] == {"min_accuracy": 0.5, "max_flops": None}
    assert [params_of(t) for t in study.trials] == space_of().warm_start()  # waiting, unsampled
    assert (
        open_study(cfg, space_of(), {}).user_attrs == attrs
    )  # resumed: nothing rewritten or re-queued
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == len(
        space_of().warm_start()
    )
    with pytest.raises(ConfigError, match="optimises"):
        open_study(
            SearchSettings.from_flat(study="s", storage=storage, objectives=["accuracy", "fps"]),
            space_of(),
            {},
        )
