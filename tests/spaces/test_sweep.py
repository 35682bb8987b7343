"""One target swept on a grid (prunetune.spaces.sweep): every target once in a seeded order, the
end of the grid, allocations clamped to each group's range and computed once per target."""

from __future__ import annotations

import optuna
import pytest

from prunetune.spaces.space import GroupSpec, SearchSpace
from prunetune.spaces.sweep import SweepSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)
GRID = [0.2, 0.4, 0.6]


def _space(calls: list[float]) -> SweepSpace:
    inner = SearchSpace(
        groups={
            "a": GroupSpec(8, 0.5, 0.0, 0.5),
            "b": GroupSpec(16, 0.4, 0.1, 0.9),
            "fixed": GroupSpec(4, 0.1, 0.0, 0.0),  # not searched: stays at its low end
        },
        quant_layers=["a", "b", "fc"],
        bits=[8, 32],
        importance=["l1", "l2"],
    )

    def allocate(target: float) -> dict[str, float]:
        calls.append(target)
        return {"a": 2 * target, "b": target / 4}

    return SweepSpace("uniform", inner, GRID, allocate)


def _sweep(space: SweepSpace, seed: int) -> list[float]:
    study = optuna.create_study(directions=["maximize"], sampler=space.sampler(seed))
    seen = []
    while not space.exhausted(study):
        trial = study.ask()
        seen.append(space.suggest(trial)[space.param])
        study.tell(trial, 0.5)
        assert len(seen) <= len(GRID)
    return seen


def test_every_target_once_in_a_seeded_order_then_exhausted():
    space = _space([])
    first = _sweep(space, seed=0)
    assert sorted(first) == pytest.approx(GRID)
    assert _sweep(space, seed=0) == first
    assert space.param == "target:uniform"


def test_a_target_decodes_to_clamped_ratios_computed_once():
    calls: list[float] = []
    space = _space(calls)
    config = space.decode({"target:uniform": 0.4})
    assert config.ratios == {"a": 0.5, "b": 0.1, "fixed": 0.0}  # 0.8 -> 0.5, 0.1 within [0.1, 0.9]
    assert config.bits == {"a": 8, "b": 8, "fc": 8} and config.importance == "l1"
    assert space.decode({"target:uniform": 0.4000000001}) == config and calls == [0.4]


def test_the_sweep_is_one_dimension_over_its_inner_space():
    space = _space([])
    summary = space.summary()
    assert (summary["ratio_dims"], summary["bits_dims"], summary["targets"]) == (1, 0, 3)
    assert space.warm_start() == [] and space.fingerprint() == space.inner.fingerprint()
