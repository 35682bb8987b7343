"""Prunability over the model registries (timm's style: one parametrized check per architecture).

For every torchvision classification CNN and a list of timm CNNs (untrained, small inputs), a
uniform 0.3 and a random per-group pruning must give a model whose forward works with the same
output shape, fewer MACs, and that reloads exactly from its compressed-model file. Models that
cannot be pruned must degrade gracefully: no crash, nothing prunable, the layers named with the
reason; `REFUSED` lists them with that reason, so a regression and an unexpected improvement
both fail. `bench/prunability.py` runs the same `check` and writes bench/results/prunability.md.
"""

from __future__ import annotations

import collections
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from prunetune.compress import (
    CompressionConfig,
    compress,
    inventory,
    load_compressed_file,
    save_compressed,
)
from prunetune.compress.graph import analyse
from prunetune.measure import count_macs
from prunetune.models import build_for

SIDE = 32  # input side unless SIDES says otherwise
SIDES = {
    "torchvision:inception_v3": 75,
    "torchvision:googlenet": 64,
    "torchvision:alexnet": 64,
    "torchvision:squeezenet1_0": 64,
    "torchvision:squeezenet1_1": 64,
    "timm:inception_v3": 75,
    "timm:inception_v4": 75,
    "timm:inception_resnet_v2": 75,
}
CLASSES = 10

# transformers with an input size fixed at build time (224 px; too slow for this sweep): ViT, MaxViT
NOT_SWEPT = {"vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32", "maxvit_t"}
# the same code as a smaller sibling that is swept, too big for one core in seconds each: only in
# `bench/prunability.py --all`
BIG_VARIANTS = {
    "regnet_y_128gf",
    "regnet_y_32gf",
    "regnet_x_32gf",
    "regnet_y_16gf",
    "regnet_x_16gf",
    "efficientnet_b7",
    "efficientnet_b6",
    "efficientnet_b5",
    "efficientnet_v2_l",
    "efficientnet_v2_m",
    "convnext_large",
    "convnext_base",
    "resnext101_64x4d",
    "resnext101_32x8d",
    "wide_resnet101_2",
    "resnet152",
    "resnet101",
    "densenet201",
    "densenet169",
    "densenet161",
    "vgg19_bn",
    "vgg19",
    "vgg16",
    "vgg13",
    "swin_b",
    "swin_v2_b",
    "swin_s",
    "swin_v2_s",
    "efficientnet_b4",
    "regnet_y_8gf",
    "regnet_x_8gf",
    "wide_resnet50_2",
    "mnasnet1_3",
    "mnasnet0_75",
    "shufflenet_v2_x2_0",
    "shufflenet_v2_x1_5",
}
TORCHVISION = [
    f"torchvision:{n}"
    for n in torchvision.models.list_models(module=torchvision.models)
    if n not in NOT_SWEPT
]
TIMM = [
    f"timm:{n}"
    for n in (
        "resnet10t",
        "resnet14t",
        "resnet18d",
        "resnet26",
        "seresnet18",
        "resnext26ts",
        "ecaresnet26t",
        "skresnet18",
        "resnest14d",
        "regnetx_002",
        "regnety_002",
        "mobilenetv3_small_050",
        "mobilenetv2_050",
        "mnasnet_small",
        "lcnet_050",
        "efficientnet_b0",
        "tinynet_e",
        "ghostnet_050",
        "rexnet_100",
        "dla34",
        "cspresnet50",
        "darknet17",
        "dpn68",
        "ese_vovnet19b_dw",
        "densenet121",
        "repvgg_a0",
        "convnext_atto",
        "convnextv2_atto",
        "fbnetc_100",
        "selecsls42b",
    )
]

# model -> (substring of the reason its layers are left alone): refused, nothing prunable
REFUSED = {
    "timm:dpn68": "dependency tracing failed (TypeError"
}  # torch-pruning's tracer fails itself
# model -> substring of the reason some layers stay (pruned, but less than 25 % fewer MACs at 0.3)
PARTIAL = {
    # only the MLP hidden units prune: the attention's qkv is a functional linear split into heads
    "torchvision:swin_t": "AddmmBackward0",
    "torchvision:swin_v2_t": "AddmmBackward0",
    # selective kernel: the branches are stacked on a new dim and summed, which torch-pruning
    # cannot map
    "timm:skresnet18": "SumBackward1",
}


@dataclass
class Outcome:
    """What `check` found for one model."""

    model: str
    side: int
    groups: int = 0
    refused_layers: int = 0
    reasons: list[tuple[str, int]] = field(
        default_factory=list
    )  # most frequent reasons, with counts
    macs: int = 0
    macs_uniform: int | None = None
    macs_random: int | None = None
    seconds: float = 0.0

    @property
    def refused(self) -> bool:
        return self.groups == 0

    @property
    def reduction(self) -> float | None:
        return None if self.macs_uniform is None else 1 - self.macs_uniform / self.macs

    def as_dict(self) -> dict:
        return asdict(self) | {"refused": self.refused, "reduction": self.reduction}


def _pruned_and_reloaded(
    model: nn.Module, name: str, config: CompressionConfig, x: torch.Tensor, folder: Path
) -> int:
    """Compress, check forward/shape/exact reload; the pruned model's MACs per image."""
    small = compress(model, config, x[:1]).eval()
    with torch.no_grad():
        out, want = small(x), model(x)
    assert out.shape == want.shape, (
        f"{name}: output shape {tuple(out.shape)} != {tuple(want.shape)}"
    )
    path = save_compressed(
        folder / "m.pt",
        small,
        config,
        {"model": name, "input_shape": tuple(x.shape[1:]), "num_classes": CLASSES},
    )
    again, _ = load_compressed_file(path)
    with torch.no_grad():
        assert torch.equal(again(x), out), f"{name}: reloaded outputs differ"
    return count_macs(small, x[:1])


def check(name: str, *, seed: int = 0) -> Outcome:
    """Prune `name` at 0.3 and at random ratios in [0, 0.7) per group (see the module docstring);
    AssertionError for a broken contract; refused models return with `groups == 0`."""
    t0 = time.perf_counter()
    side = SIDES.get(name, SIDE)
    torch.manual_seed(seed)
    model = build_for(name, (3, side, side), CLASSES).eval()
    x = torch.randn(2, 3, side, side)
    inv = inventory(model, x[:1])
    result = Outcome(
        name,
        side,
        len(inv.groups),
        len(inv.skipped),
        macs=inv.total_macs,
        reasons=collections.Counter(r for _, r in inv.skipped).most_common(3),
    )
    if inv.groups:
        rng = random.Random(seed)
        with tempfile.TemporaryDirectory() as tmp:
            uniform = CompressionConfig(ratios={g.name: 0.3 for g in inv.groups}, importance="l1")
            result.macs_uniform = _pruned_and_reloaded(model, name, uniform, x, Path(tmp))
            mixed = CompressionConfig(
                ratios={g.name: rng.uniform(0, 0.7) for g in inv.groups}, importance="l1"
            )
            result.macs_random = _pruned_and_reloaded(model, name, mixed, x, Path(tmp))
        assert result.macs_uniform < result.macs and result.macs_random < result.macs, result
    result.seconds = time.perf_counter() - t0
    return result


BENCHED = [n for n in TORCHVISION if n.split(":", 1)[1] not in BIG_VARIANTS] + TIMM  # bench default
# slow siblings of swept models (VGG's 25088x4096 classifier, Swin's attention: 30-90 s each here),
# measured by the bench only
BENCH_ONLY = {
    "torchvision:swin_v2_t",
    "torchvision:vgg11",
    "torchvision:vgg13_bn",
    "torchvision:vgg16_bn",
    "torchvision:convnext_small",
    "torchvision:regnet_y_3_2gf",
    "torchvision:regnet_x_3_2gf",
    "torchvision:regnet_y_1_6gf",
    "timm:densenet121",
    # the slowest of the rest (30-90 s each on one loaded core): the suite stays in budget
    "torchvision:densenet121",
    "torchvision:alexnet",
    "torchvision:inception_v3",
    "torchvision:efficientnet_v2_s",
}
SWEPT = [n for n in BENCHED if n not in BENCH_ONLY]


def assert_as_expected(result: Outcome) -> None:
    """The sweep's contract for one model (see REFUSED and PARTIAL)."""
    name = result.model
    if name in REFUSED:
        assert result.refused, f"{name} is prunable now ({result.groups} groups): update REFUSED"
        assert result.refused_layers and REFUSED[name] in result.reasons[0][0], result.reasons
        return
    assert not result.refused, f"{name}: nothing prunable ({result.reasons})"
    if name in PARTIAL:
        assert any(PARTIAL[name] in r for r, _ in result.reasons), result.reasons
        assert result.reduction < 0.25, (
            f"{name} has {result.reduction:.0%} fewer MACs now: update PARTIAL"
        )
    else:
        assert result.reduction >= 0.25, (
            f"{name}: only {result.reduction:.0%} fewer MACs at 0.3 ({result.reasons})"
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", SWEPT)
def test_prunability(name, one_torch_thread):
    assert_as_expected(check(name))


def test_convnext_prunes_through_its_channels_last_blocks(one_torch_thread):
    """permute -> LayerNorm -> Linear -> Linear -> permute back is mapped as torch-pruning maps
    it."""
    result = check("torchvision:convnext_tiny")
    assert result.groups >= 18 and result.reduction >= 0.4, result
    assert [r for r, _ in result.reasons] == ["produces the model output"]


def test_shufflenet_keeps_its_channel_shuffle_layers_refused_and_named(one_torch_thread):
    model = build_for("torchvision:shufflenet_v2_x0_5", (3, 32, 32), CLASSES)
    skipped = dict(analyse(model, torch.zeros(1, 3, 32, 32)).skipped)
    shuffle = {n: r for n, r in skipped.items() if "ViewBackward0" in r and "-> [1, 2," in r}
    assert "stage2.0.branch1.2" in shuffle and "stage4.3.branch2.5" in shuffle, skipped
    assert all("cannot map" in r for r in shuffle.values())


class _ChannelsLastFlatten(nn.Module):
    """A conv whose output is permuted to channels-last and then flattened: torch-pruning's flatten
    mapping assumes (N, C, H, W) order, so this conv must stay unpruned."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).permute(0, 2, 3, 1).flatten(1))


class _ChannelsLastConv(nn.Module):
    """A channels-last tensor fed to a conv (its channels are then the image's width)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(self.conv(x).permute(0, 3, 2, 1)).flatten(1))


@pytest.mark.parametrize(
    "model, reason",
    [
        (_ChannelsLastFlatten, "(channels-last)"),
        (_ChannelsLastConv, "to channels-last feeds Conv2d"),
    ],
)
def test_channels_last_ops_torch_pruning_cannot_map_stay_refused(model, reason):
    skipped = dict(analyse(model().eval(), torch.zeros(1, 3, 4, 4)).skipped)
    assert "conv" in skipped and reason in skipped["conv"], skipped


def test_timm_names_build_through_the_registry(capsys):
    from prunetune.cli import main
    from prunetune.errors import UnknownNameError

    model = build_for("timm:resnet10t", (1, 16, 16), 7)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 7)
    with pytest.raises(UnknownNameError, match="unknown timm model 'no_such_net'"):
        build_for("timm:no_such_net", (3, 32, 32), 10)
    assert (
        main(["info", "--model", "timm:resnet10t", "--input-size", "3,32,32", "--format", "json"])
        == 0
    )
    assert '"macs"' in capsys.readouterr().out
