from __future__ import annotations

import optuna
import pytest
import torch

from prunetune.compress import compress, inventory
from prunetune.errors import ConfigError
from prunetune.measure import count_macs
from prunetune.models import build_for
from prunetune.spaces import SearchSpace, block_of


def _inv(name: str, shape=(3, 32, 32)):
    model = build_for(name, shape, 10)
    return model, inventory(model, torch.zeros(1, *shape))


@pytest.mark.parametrize(
    "name, expect_groups", [("resnet18", 12), ("mobilenet_v2", None), ("mnist_net", 3)]
)
def test_layer_space_has_one_ratio_per_group(name, expect_groups):
    _, inv = _inv(name, (1, 28, 28) if name == "mnist_net" else (3, 32, 32))
    space = SearchSpace.from_inventory(inv, bits=[32, 8])
    if expect_groups is not None:
        assert len(space.groups) == expect_groups
    assert set(space.ratio_dims()) == set(space.groups)
    assert set(space.bits_dims()) == {q.name for q in inv.quant_layers}


def test_residual_groups_couple_the_add():
    """ResNet-18: convs feeding the same residual add form one group, so the space's groups are
    fewer than the model's convs (20 convs incl. downsample, 12 groups)."""
    model, inv = _inv("resnet18")
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) > len(inv.groups)
    coupled = [g for g in inv.groups if len([x for x in g.layers if x in convs]) > 2]
    assert coupled, "some group must couple several convs through a residual add"


def test_block_granularity_groups_stages():
    _, inv = _inv("resnet18")
    space = SearchSpace.from_inventory(inv, granularity="block")
    dims = space.ratio_dims()
    assert set(dims) == {"conv1", "layer1", "layer2", "layer3", "layer4"}
    assert sum(len(v) for v in dims.values()) == len(space.groups)


def test_block_of_depthwise_model_uses_two_components():
    _, inv = _inv("mobilenet_v2")
    blocks = block_of([g.name for g in inv.groups])
    assert all(b.startswith("features.") or b.startswith("classifier") for b in blocks.values())
    assert len(set(blocks.values())) > 3


def test_global_space_is_one_ratio():
    _, inv = _inv("mobilenet_v2")
    space = SearchSpace.from_inventory(inv, granularity="global", bits=[32])
    assert list(space.ratio_dims()) == ["all"] and space.bits_dims() == {}


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_suggested_configs_compress_and_run(name):
    model, inv = _inv(name)
    space = SearchSpace.from_inventory(inv, ratio_max=0.6, bits=[32, 8, 4])
    study = optuna.create_study(
        directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=1)
    )
    trial = study.ask()
    config = space.decode(space.suggest(trial))
    small = compress(model, config, torch.zeros(1, 3, 32, 32))
    assert small(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert count_macs(small, torch.zeros(1, 3, 32, 32)) <= count_macs(
        model, torch.zeros(1, 3, 32, 32)
    )


def test_yaml_round_trip_and_fingerprint(tmp_path):
    _, inv = _inv("resnet18")
    space = SearchSpace.from_inventory(inv, ratio_max=0.8, ratio_step=0.1, bits=[32, 8, 6])
    f = tmp_path / "space.yaml"
    f.write_text(space.to_yaml())
    again = SearchSpace.from_yaml(f)
    assert again.to_dict() == space.to_dict()
    assert again.fingerprint() == space.fingerprint()
    again.groups["conv1"].high = 0.5
    assert again.fingerprint() != space.fingerprint()


def test_warm_start_params_are_in_the_space():
    _, inv = _inv("mnist_net", (1, 28, 28))
    space = SearchSpace.from_inventory(inv)
    seeds = space.warm_start()
    assert seeds[0] == {
        **{f"ratio:{g}": 0.5 for g in space.groups},
        **{f"bits:{q}": 32 for q in space.quant_layers},
    }
    assert seeds[2] == {
        **{f"ratio:{g}": 0.5 for g in space.groups},
        **{f"bits:{q}": 8 for q in space.quant_layers},
    }
    for p in seeds:
        cfg = space.decode(p)
        assert all(0.0 <= r < 1.0 for r in cfg.ratios.values())


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"colour": "red"}, "unknown key"),
        ({"ratio": {"min": 0.0, "max": 0.9, "stride": 0.1}}, "unknown key"),
        ({"bits": {"choices": [32, 9]}}, "not allowed"),
        ({"bits": {"choices": "eight"}}, "list of integers"),
        ({"granularity": "filter"}, "granularity"),
        ({"importance": ["l3"]}, "unknown importance"),
    ],
)
def test_bad_space_files(tmp_path, patch, message):
    _, inv = _inv("mnist_net", (1, 28, 28))
    data = SearchSpace.from_inventory(inv).to_dict() | patch
    import yaml

    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        SearchSpace.from_yaml(f)


@pytest.mark.parametrize("rng", [[0.2, 1.0], [-0.1, 0.5], [0.6, 0.3], ["a", 0.5]])
def test_group_ratio_out_of_range(tmp_path, rng):
    _, inv = _inv("mnist_net", (1, 28, 28))
    data = SearchSpace.from_inventory(inv).to_dict()
    data["groups"]["0"]["ratio"] = rng
    import yaml

    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError):
        SearchSpace.from_yaml(f)


def test_space_of_another_model_does_not_fit():
    _, inv = _inv("mnist_net", (1, 28, 28))
    _, other = _inv("resnet18")
    space = SearchSpace.from_inventory(other)
    with pytest.raises(ConfigError, match="unknown group"):
        space.check_fits(inv)
