"""Structured pruning: inventory, physical channel removal, rounding, errors, robustness."""

from __future__ import annotations

import random

import pytest
import torch
import torchvision
from torch import nn

from prunetune.compress import QuantLayer, apply_quantization, inventory, kept_channels, prune
from prunetune.errors import ConfigError, UnknownNameError
from prunetune.measure import count_macs, count_params
from prunetune.models import build_for

TORCHVISION = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "densenet121",
    "vgg11_bn",
]
X32 = torch.zeros(1, 3, 32, 32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def zoo() -> dict:
    """Base torchvision models (10 classes) with their base MACs, built once per module."""
    cache: dict = {}

    def get(name: str) -> tuple[nn.Module, int]:
        if name not in cache:
            torch.manual_seed(0)
            model = torchvision.models.get_model(name, num_classes=10).eval()
            cache[name] = (model, count_macs(model, X32))
        return cache[name]

    return get


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", TORCHVISION)
@pytest.mark.parametrize("mode", ["uniform", "random"])
def test_torchvision_models_prune_and_shrink(zoo, name, mode):
    base, base_macs = zoo(name)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    if mode == "uniform":
        ratios: float | dict = 0.3
    else:
        rng = random.Random(name)
        ratios = {g.name: rng.uniform(0.2, 0.6) for g in inventory(base, X32).groups}
    pruned = prune(base, ratios, X32, importance="l1")
    x = torch.randn(2, 3, 32, 32)
    out = pruned.eval()(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert count_macs(pruned, X32) <= 0.75 * base_macs
    assert count_params(pruned) < count_params(base)
    report = pruned.prunetune_report
    assert report.skipped and all(
        reason == "produces the model output" for _, reason in report.skipped
    )
    assert any(after < before_ for before_, after in report.channels.values())
    after = base.state_dict()  # the input model is untouched
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_shufflenet_prunes_around_channel_shuffle():
    torch.manual_seed(0)
    base = torchvision.models.get_model("shufflenet_v2_x1_0", num_classes=10).eval()
    inv = inventory(base, X32)
    pruned = prune(base, 0.3, X32)
    assert pruned.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert count_macs(pruned, X32) < 0.85 * count_macs(base, X32)
    skipped = dict(pruned.prunetune_report.skipped)
    assert skipped == dict(inv.skipped)
    # the branch outputs feed the channel shuffle and are named; everything else is pruned
    for layer in ("stage2.0.branch1.2", "stage2.1.branch2.5", "stage4.3.branch2.5"):
        assert layer in skipped and "cannot" in skipped[layer]
    assert skipped["fc"] == "produces the model output"
    names = {g.name for g in inv.groups}
    assert {"conv1.0", "stage2.0.branch2.0", "stage4.3.branch2.0", "conv5.0"} <= names
    assert pruned.conv5[0].out_channels == round(1024 * 0.7)
    assert pruned.stage3[2].branch2[3].out_channels == round(116 * 0.7)  # depthwise conv shrank too


def test_mnist_net_reference_shape_has_published_macs_and_params():
    torch.manual_seed(0)
    base = build_for("mnist_net", (1, 28, 28), 10)
    x = torch.zeros(1, 1, 28, 28)
    assert [g.name for g in inventory(base, x).groups] == ["0", "2", "5"]
    pruned = prune(base, {"0": 12 / 16, "2": 30 / 32}, x)
    assert (pruned[0].out_channels, pruned[2].out_channels, pruned[5].out_features) == (4, 2, 1024)
    assert count_macs(pruned, x) == 1_700_544
    assert count_params(pruned) == 1_617_020
    assert pruned.prunetune_report.kept == {"0": 4, "2": 2, "5": 1024}


def test_a_one_filter_conv_does_not_block_the_layers_feeding_it():
    """The hand schedule's end point (4, 1) -> (1, 1): conv2 has a single filter (not prunable
    itself) and conv1 still shrinks. Regression: the batch was traced as an unbatched sample,
    which made the one-filter conv look like an op that moves channels."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 1, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(784, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
    x = torch.randn(1, 1, 28, 28)
    inv = inventory(net, x)
    assert [g.name for g in inv.groups] == ["0", "5"]
    assert dict(inv.skipped) == {
        "2": "has a single output channel",
        "7": "produces the model output",
    }
    pruned = prune(net, {"0": 0.75}, x)
    assert (pruned[0].out_channels, pruned[2].in_channels, pruned[2].out_channels) == (1, 1, 1)
    assert pruned(x).shape == (1, 10)


def test_lowest_importance_channels_go_and_outputs_survive():
    """Channels that contribute nothing (zero filters, zero BN, zero consumer weights) are the ones
    l1 removes, through the residual group of ResNet-18: the outputs must not change."""
    torch.manual_seed(0)
    model = build_for("resnet18", (3, 32, 32), 10).eval()
    dead = torch.arange(3, 64, 4)  # 16 channels of the stem / layer1 residual stream
    with torch.no_grad():
        for name in ("conv1", "layer1.0.conv2", "layer1.1.conv2"):
            model.get_submodule(name).weight[dead] = 0
        for name in ("bn1", "layer1.0.bn2", "layer1.1.bn2"):
            model.get_submodule(name).weight[dead] = 0
            model.get_submodule(name).bias[dead] = 0
        for name in ("layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.downsample.0"):
            model.get_submodule(name).weight[:, dead] = 0
    pruned = prune(model, {"conv1": 0.25}, X32, importance="l1")
    assert pruned.conv1.out_channels == 48 and pruned.layer1[1].conv2.out_channels == 48
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(pruned.eval()(x), model(x), rtol=1e-4, atol=1e-5)
    kept = [i for i in range(64) if i not in dead.tolist()]
    torch.testing.assert_close(pruned.bn1.running_var, model.bn1.running_var[kept])


def test_structure_does_not_depend_on_importance_or_data():
    torch.manual_seed(0)
    model = build_for("mobilenet_v2", (3, 32, 32), 10).eval()
    data = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(2)]
    ratios = {g.name: 0.1 + 0.05 * (i % 8) for i, g in enumerate(inventory(model, X32).groups)}
    results = {
        imp: prune(model, ratios, X32, importance=imp, data=data, round_to=4)
        for imp in ("l1", "l2", "taylor", "bn_scale", "random")
    }
    shapes = {imp: _shapes(m) for imp, m in results.items()}
    assert all(s == shapes["l1"] for s in shapes.values())
    # ... while the channels chosen do differ
    w = {imp: m.features[1].conv[0][0].weight for imp, m in results.items()}
    assert not torch.equal(w["l1"], w["random"]) and not torch.equal(w["l1"], w["taylor"])


def test_random_importance_is_seeded():
    torch.manual_seed(0)
    model = build_for("tiny_cnn", (1, 8, 8), 4).eval()
    x = torch.zeros(1, 1, 8, 8)
    a, b, c = (prune(model, 0.5, x, importance="random", seed=s) for s in (1, 1, 2))
    assert torch.equal(a[3].weight, b[3].weight) and not torch.equal(a[3].weight, c[3].weight)


def test_taylor_needs_data():
    model = build_for("tiny_cnn", (1, 8, 8), 4)
    with pytest.raises(ConfigError, match="needs data"):
        prune(model, 0.5, torch.zeros(1, 1, 8, 8), importance="taylor")
    with pytest.raises(UnknownNameError, match="bn_scale"):
        prune(model, 0.5, torch.zeros(1, 1, 8, 8), importance="magic")


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.3", True])
def test_bad_ratios_raise_config_error(bad):
    model = build_for("tiny_cnn", (1, 8, 8), 4)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        prune(model, bad, torch.zeros(1, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        prune(model, {"0": bad}, torch.zeros(1, 1, 8, 8))


def test_unknown_and_unprunable_group_names_raise_config_error():
    model = build_for("resnet18", (3, 32, 32), 10)
    with pytest.raises(
        ConfigError, match="unknown pruning group 'nope'; prunable groups: conv1, layer1.0.conv1"
    ):
        prune(model, {"nope": 0.5}, X32)
    with pytest.raises(ConfigError, match="'fc' cannot be pruned: produces the model output"):
        prune(model, {"fc": 0.5}, X32)
    with pytest.raises(ConfigError, match="pruned together with its group 'conv1'"):
        prune(model, {"layer1.0.conv2": 0.5}, X32)
    with pytest.raises(ConfigError, match="round_to"):
        prune(model, 0.5, X32, round_to=0)


def test_quantized_model_cannot_be_pruned():
    model = apply_quantization(build_for("tiny_cnn", (1, 8, 8), 4), 4)
    with pytest.raises(ConfigError, match="prune the float model first"):
        prune(model, 0.5, torch.zeros(1, 1, 8, 8))


@pytest.mark.parametrize(
    "channels, ratio, round_to, divisor, kept",
    [
        (16, 12 / 16, 1, 1, 4),
        (32, 30 / 32, 1, 1, 2),
        (5, 0.99, 1, 1, 1),
        (64, 0.0, 8, 1, 64),
        (64, 0.3, 8, 1, 48),
        (64, 0.95, 8, 1, 8),
        (10, 0.05, 4, 1, 8),
        (3, 0.5, 8, 1, 2),
        (16, 0.5, 1, 4, 8),
        (16, 0.6, 2, 4, 8),
        (4, 0.5, 1, 4, 4),
        (7, 0.5, 1, 1, 4),
    ],
)
def test_kept_channels(channels, ratio, round_to, divisor, kept):
    assert kept_channels(channels, ratio, round_to, divisor) == kept


def test_round_to_gives_multiples_and_never_empties_a_group():
    model = build_for("resnet18", (3, 32, 32), 10)
    pruned = prune(model, 0.3, X32, round_to=8)
    assert all(after % 8 == 0 for after in pruned.prunetune_report.kept.values())
    tiny = prune(build_for("tiny_cnn", (1, 8, 8), 4), 0.99, torch.zeros(1, 1, 8, 8))
    assert tiny.prunetune_report.kept == {"0": 1, "3": 1, "8": 1}
    assert tiny(torch.randn(2, 1, 8, 8)).shape == (2, 4)


class _Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 16, 3, padding=1, groups=4), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        return self.fc(torch.relu(self.b2(self.c2(x))).mean((2, 3)))


class _InputResidual(nn.Module):
    """x + conv(x): the tracer cannot see that conv's outputs are tied to the 3 input channels."""

    def __init__(self) -> None:
        super().__init__()
        self.c0, self.c1, self.fc = (
            nn.Conv2d(3, 3, 3, padding=1),
            nn.Conv2d(3, 8, 3, padding=1),
            nn.Linear(8, 5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.c1(x + self.c0(x)).mean((2, 3)))


class _PixelShuffle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c0, self.c1, self.fc = (
            nn.Conv2d(3, 16, 3, padding=1),
            nn.Conv2d(4, 8, 3, padding=1),
            nn.Linear(8, 5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.c1(nn.functional.pixel_shuffle(self.c0(x), 2)).mean((2, 3)))


def test_grouped_convolutions_shrink_by_whole_groups():
    model, x = _Grouped().eval(), torch.randn(2, 3, 8, 8)
    assert [(g.name, g.kind, g.divisor) for g in inventory(model, x[:1]).groups] == [
        ("c1", "grouped", 4),
        ("c2", "grouped", 4),
    ]
    pruned = prune(model, 0.6, x[:1])
    assert pruned.prunetune_report.kept == {"c1": 4, "c2": 8}
    assert pruned.c2.weight.shape == (8, 1, 3, 3) and pruned(x).shape == (2, 5)


def test_unsupported_ops_are_left_unpruned_and_reported():
    x = torch.randn(1, 3, 8, 8)
    shuffled = prune(_PixelShuffle().eval(), 0.5, x)
    assert shuffled.c0.out_channels == 16 and shuffled.c1.out_channels == 4
    assert "PixelShuffle" in dict(shuffled.prunetune_report.skipped)["c0"]
    # a coupling the tracer misses breaks the forward pass: detected, undone, reported
    residual = prune(_InputResidual().eval(), 0.5, x)
    assert residual.c0.out_channels == 3 and residual.c1.out_channels == 4
    assert "broke the forward pass" in dict(residual.prunetune_report.skipped)["c0"]
    assert residual(x).shape == (1, 5)


def test_inventory_describes_groups_and_layers():
    model = build_for("resnet18", (3, 32, 32), 10).train()
    inv = inventory(model, X32)
    assert model.training
    assert len(inv.groups) == 12 and inv.skipped == [("fc", "produces the model output")]
    stem = inv.group("conv1")
    assert stem.kind == "residual" and stem.channels == 64
    assert {
        "conv1",
        "bn1",
        "layer1.0.conv2",
        "layer1.1.conv2",
        "layer2.0.conv1",
        "layer2.0.downsample.0",
    } <= set(stem.layers)
    assert inv.group("layer1.0.conv1").layers == (
        "layer1.0.conv1",
        "layer1.0.bn1",
        "layer1.0.conv2",
    )
    assert all(0 < g.macs_share <= 1 for g in inv.groups)
    assert len(inv.quant_layers) == 21
    assert inv.quant_layers[0] == QuantLayer("conv1", "conv", 64 * 3 * 3 * 3, 64 * 27 * 32 * 32)
    assert inv.quant_layers[-1] == QuantLayer("fc", "linear", 512 * 10 + 10, 512 * 10)
    assert sum(q.macs for q in inv.quant_layers) == inv.total_macs == count_macs(model, X32)
    kinds = {g.kind for g in inventory(build_for("mobilenet_v2", (3, 32, 32), 10), X32).groups}
    assert kinds == {"depthwise-coupled", "residual", "conv"}


class _Tied(nn.Module):
    """conv2 shares conv1's weight tensor (tied weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2.weight = self.conv1.weight
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.conv0(x))
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.mean((2, 3)))


def test_tied_weights_are_left_alone_never_untied():
    """Decided: layers whose weights are tied are neither pruned nor given a bit-width of their own
    (pruning used to untie them silently); the reason is listed with the unpruned layers."""
    from prunetune.compress import CompressionConfig, compress, inventory

    model, x = _Tied().eval(), torch.zeros(1, 1, 8, 8)
    inv = inventory(model, x)
    reasons = dict(inv.skipped)
    assert "shares its weights with" in reasons["conv1"] and "(tied)" in reasons["conv2"]
    assert all("conv1" not in g.layers and "conv2" not in g.layers for g in inv.groups)
    assert {q.name for q in inv.quant_layers}.isdisjoint({"conv1", "conv2"})
    ratios = {g.name: 0.5 for g in inv.groups}
    pruned = compress(model, CompressionConfig(ratios=ratios), x)
    assert pruned.conv2.weight is pruned.conv1.weight
