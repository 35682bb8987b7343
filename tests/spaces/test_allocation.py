"""The level + allocation parametrization (prunetune.spaces.allocation,
`--parametrization allocation`)."""

from __future__ import annotations

import optuna
import pytest
import torch

from prunetune.compress import compress, inventory
from prunetune.measure import count_macs
from prunetune.models import build_for
from prunetune.spaces import SearchSpace
from prunetune.spaces.allocation import ALLOC, LEVEL, SPREAD, AllocationSpace
from tests.helpers import run_cli, search_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model, x = build_for("resnet18", (1, 28, 28), 10).eval(), torch.zeros(1, 1, 28, 28)
    inner = SearchSpace.from_inventory(
        inventory(model, x), ratio_min=0.7, ratio_max=0.95, bits=[32]
    )
    return model, x, inner


def _sampled(space, n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.suggest(trial))
        study.tell(trial, 0.0)
    return out


def test_params_are_one_level_and_one_allocation_per_dimension(resnet):
    _, _, inner = resnet
    space = AllocationSpace(inner)
    params = _sampled(space, 1)[0]
    assert set(params) == {LEVEL} | {ALLOC + d for d in inner.ratio_dims()}
    assert 0.7 <= params[LEVEL] <= 0.95 and all(
        -1 <= params[ALLOC + d] <= 1 for d in inner.ratio_dims()
    )


def test_the_macs_weighted_mean_ratio_is_the_level(resnet):
    """Unclamped (level 0.5 in [0, 0.95]: 0.5 +- 2 x SPREAD always fits), the centred allocations
    keep the MACs-weighted mean ratio at the level; clamped (level 0.8 in [0.7, 0.95]) every ratio
    stays in its range."""
    model, x, _ = resnet
    wide = AllocationSpace(
        SearchSpace.from_inventory(inventory(model, x), ratio_min=0.0, ratio_max=0.95, bits=[32])
    )
    weights = {
        d: sum(wide.groups[m].macs_share for m in ms) for d, ms in wide.inner.ratio_dims().items()
    }
    for params in _sampled(wide, 20, seed=3):
        ratios = wide.ratios({**params, LEVEL: 0.5})
        assert 0.0 < min(ratios.values()) and max(ratios.values()) < 0.95  # nothing clamped
        mean = sum(ratios[d] * w for d, w in weights.items()) / sum(weights.values())
        assert mean == pytest.approx(0.5, abs=1e-5)
        assert max(abs(r - 0.5) for r in ratios.values()) <= 2 * SPREAD + 1e-9
    narrow = AllocationSpace(resnet[2])
    for params in _sampled(narrow, 20, seed=3):
        assert all(0.7 <= r <= 0.95 for r in narrow.ratios({**params, LEVEL: 0.8}).values())


def test_configs_at_one_level_stay_near_that_levels_macs(resnet):
    """What the parametrization is for: at level 0.85 every sampled config's MACs is within a factor
    1.5 of the uniform-0.85 config's, while independent per-group ratios spread far wider."""
    model, x, inner = resnet
    space = AllocationSpace(inner)
    uniform = count_macs(
        compress(model, inner.decode({f"ratio:{d}": 0.85 for d in inner.ratio_dims()}), x), x
    )
    allocated = [
        count_macs(compress(model, space.decode({**p, LEVEL: 0.85}), x), x) / uniform
        for p in _sampled(space, 4, seed=1)
    ]
    independent = [
        count_macs(compress(model, inner.decode(p), x), x) / uniform
        for p in _sampled(inner, 4, seed=1)
    ]
    assert all(1 / 1.5 <= f <= 1.5 for f in allocated), allocated
    assert max(independent) / min(independent) > max(allocated) / min(allocated)


def test_warm_starts_are_uniform_levels(resnet):
    _, _, inner = resnet
    space = AllocationSpace(inner)
    seeds = space.warm_start()
    assert seeds and all(all(v == 0.0 for k, v in s.items() if k.startswith(ALLOC)) for s in seeds)
    for s in seeds:
        assert len(set(space.ratios(s).values())) == 1


def test_search_with_allocation_runs_and_records_levels(tmp_path):
    out = run_cli(
        search_args(
            "alloc",
            3,
            "--strategy",
            "search",
            "--parametrization",
            "allocation",
            "--bits",
            "32",
            "--objectives",
            "accuracy,macs",
        ),
        tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    from tests.helpers import load_study

    study = load_study(tmp_path, "alloc")
    assert all(LEVEL in t.params for t in study.trials) and len(study.trials) == 3


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--parametrization", "levels"], "unknown parametrization 'levels'"),
        (
            ["--parametrization", "allocation", "--strategy", "uniform"],
            "use it with --strategy search",
        ),
    ],
)
def test_bad_parametrizations_are_one_line_exit_2(tmp_path, extra, message):
    out = run_cli(search_args("bad", 1, *extra), tmp_path)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "mlruns").exists()
