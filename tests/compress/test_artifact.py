"""Compressed-model files (prunetune.compress.artifact): saved and reloaded exactly, broken and
crafted files refused. The config and the pipeline: tests/compress/test_config.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from prunetune.compress import (
    CompressionConfig,
    compress,
    inventory,
    load_compressed_file,
    save_compressed,
)
from prunetune.errors import CheckpointError, ConfigError
from prunetune.measure import count_macs
from prunetune.models import build_for


TINY = {"model": "tiny_cnn", "input_shape": (1, 8, 8), "num_classes": 10}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _finetune(model: nn.Module, shape: tuple[int, ...], steps: int = 2) -> None:
    """A few training steps so weights, BN statistics and activation ranges leave their init."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(
            model(torch.randn(4, *shape)), torch.randint(0, 10, (4,))
        ).backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize(
    "model_name, shape, config",
    [
        (
            "mnist_net",
            (1, 28, 28),
            CompressionConfig(
                ratios={"0": 12 / 16, "2": 30 / 32}, bits={"0": 8, "2": 4, "5": 2, "7": 8}
            ),
        ),
        (
            "resnet18",
            (3, 32, 32),
            CompressionConfig(
                ratios={
                    "conv1": 0.5,
                    "layer1.0.conv1": 0.3,
                    "layer2.0.conv2": 0.4,
                    "layer4.1.conv1": 0.6,
                },
                bits={"conv1": 8, "layer1.0.conv2": 3, "layer2.0.downsample.0": 5, "fc": 6},
                importance="random",
                round_to=4,
            ),
        ),
        (
            "cifar_cnn",
            (3, 32, 32),
            CompressionConfig(
                ratios={"0": 0.25, "3": 0.5},
                unstructured_sparsity=0.7,
                kmeans_bits=4,
                kmeans_init="forgy",
            ),
        ),
        (
            "lenet300_100",
            (1, 28, 28),
            CompressionConfig(
                ratios={"1": 0.5}, unstructured_q=0.8, bits={"1": 5, "3": 5}, act_bits=32
            ),
        ),
    ],
)
def test_save_and_reload_reproduces_outputs_exactly(tmp_path, model_name, shape, config):
    torch.manual_seed(0)
    base = build_for(model_name, shape, 10)
    model = compress(base, config, torch.zeros(1, *shape), seed=3)
    _finetune(model, shape)
    base_ref = {"model": model_name, "input_shape": shape, "num_classes": 10, "dataset": "mnist5k"}
    path = save_compressed(
        tmp_path / "trial" / "model.pt",
        model,
        config,
        base_ref,
        meta={"trial": 7, "accuracy": 0.91},
    )
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left behind
    raw = torch.load(path, weights_only=True)
    assert raw["config"] == config.as_dict()
    rng = torch.get_rng_state()
    loaded, header = load_compressed_file(path)
    assert torch.equal(torch.get_rng_state(), rng)  # loading does not disturb the caller's seeding
    assert header["base"] == {
        "model": model_name,
        "input_shape": list(shape),
        "num_classes": 10,
        "dataset": "mnist5k",
    }
    assert header["meta"] == {"trial": 7, "accuracy": 0.91}
    assert CompressionConfig.from_dict(header["config"]) == config
    x = torch.randn(5, *shape)
    assert torch.equal(loaded(x), model(x))
    assert not loaded.training


def test_reloaded_residual_model_keeps_its_pruned_structure(tmp_path):
    torch.manual_seed(1)
    x = torch.zeros(1, 3, 32, 32)
    base = build_for("resnet18", (3, 32, 32), 10)
    config = CompressionConfig(
        ratios={g.name: 0.5 for g in inventory(base, x).groups}, bits={"fc": 4}
    )
    model = compress(base, config, x).eval()
    save_compressed(
        tmp_path / "r.pt",
        model,
        config,
        {"model": "resnet18", "input_shape": (3, 32, 32), "num_classes": 10},
    )
    loaded, _ = load_compressed_file(tmp_path / "r.pt")
    assert loaded.layer4[1].conv2.out_channels == 256 and count_macs(loaded, x) == count_macs(
        model, x
    )
    assert loaded.prunetune_report.kept == model.prunetune_report.kept


def test_broken_files_raise_checkpoint_error(tmp_path):
    config = CompressionConfig(ratios={"0": 0.5})
    model = compress(build_for("tiny_cnn", (1, 8, 8), 10), config, torch.zeros(1, 1, 8, 8))
    path = save_compressed(tmp_path / "ok.pt", model, config, TINY)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    mismatched = tmp_path / "mismatched.pt"
    payload = torch.load(path, weights_only=True)
    payload["config"]["ratios"] = {"0": 0.25}
    torch.save(payload, mismatched)
    unknown_model = tmp_path / "unknown.pt"
    payload["base"]["model"] = "no_such_net"
    torch.save(payload, unknown_model)
    for bad, message in [
        (tmp_path / "missing.pt", "does not exist"),
        (truncated, "cannot read"),
        (garbage, "cannot read"),
        (plain, "not a prunetune compressed model"),
        (mismatched, "does not fit"),
        (unknown_model, "cannot rebuild"),
    ]:
        with pytest.raises(CheckpointError, match=message):
            load_compressed_file(bad)


def test_base_reference_and_metadata_must_be_complete_and_json_able(tmp_path):
    config = CompressionConfig()
    model = compress(build_for("tiny_cnn", (1, 8, 8), 10), config, torch.zeros(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="JSON"):
        save_compressed(tmp_path / "m.pt", model, config, TINY, meta={"when": object()})
    with pytest.raises(ConfigError, match="needs input_shape, num_classes"):
        save_compressed(tmp_path / "m.pt", model, config, {"model": "tiny_cnn"})
    assert not list(tmp_path.iterdir())


def test_mnasnet_reloads_exactly_because_state_dict_metadata_is_kept(tmp_path):
    """MNASNet's _load_from_state_dict needs the layer version stored in state_dict._metadata."""
    torch.manual_seed(0)
    shape, name = (3, 64, 64), "torchvision:mnasnet0_5"
    base = build_for(name, shape, 10)
    x = torch.randn(2, *shape)
    config = CompressionConfig(ratios={g.name: 0.3 for g in inventory(base, x[:1]).groups})
    model = compress(base, config, x[:1]).eval()
    path = save_compressed(
        tmp_path / "m.pt", model, config, {"model": name, "input_shape": shape, "num_classes": 10}
    )
    assert torch.load(path, weights_only=True)["state_metadata"][""] == {"version": 2}
    loaded, header = load_compressed_file(path)
    assert torch.equal(loaded(x), model(x)) and "state_metadata" not in header


CANARY = """
import pathlib
pathlib.Path("imported.marker").write_text("imported")
from prunetune.models.zoo import tiny_cnn


def build(in_channels, num_classes, input_size):
    pathlib.Path("called.marker").write_text("called")
    return tiny_cnn(in_channels, num_classes, input_size)
"""


def _with_model(path, name: str, tmp_path):
    """A copy of the compressed file `path` whose base reference names `name`."""
    payload = torch.load(path, weights_only=True)
    payload["base"]["model"] = name
    out = tmp_path / f"{name.replace(':', '_')}.pt"
    torch.save(payload, out)
    return out


def test_user_architectures_are_rebuilt_only_when_the_caller_names_them(tmp_path, monkeypatch):
    (tmp_path / "canary_mod.py").write_text(CANARY)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = CompressionConfig(ratios={"0": 0.5})
    model = compress(build_for("tiny_cnn", (1, 8, 8), 10), config, torch.zeros(1, 1, 8, 8)).eval()
    path = _with_model(
        save_compressed(tmp_path / "m.pt", model, config, TINY), "canary_mod:build", tmp_path
    )
    with pytest.raises(
        CheckpointError,
        match=r"built from user code canary_mod:build; "
        r"pass model='canary_mod:build' to rebuild it",
    ):
        load_compressed_file(path)
    with pytest.raises(CheckpointError, match="built from 'canary_mod:build', not from 'other:fn'"):
        load_compressed_file(path, model="other:fn")
    assert not (tmp_path / "imported.marker").exists() and not (tmp_path / "called.marker").exists()
    loaded, _ = load_compressed_file(path, model="canary_mod:build")
    assert (tmp_path / "called.marker").exists()
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))


CRAFTED = """
import sys
from prunetune.compress import load_compressed_file
from prunetune.errors import CheckpointError
for path in sys.argv[1:]:
    try:
        load_compressed_file(path)
    except CheckpointError as exc:
        print("refused:", exc)
print("survived")
"""


@pytest.mark.slow
def test_crafted_files_naming_dangerous_functions_call_nothing(tmp_path):
    config = CompressionConfig()
    model = compress(build_for("tiny_cnn", (1, 8, 8), 10), config, torch.zeros(1, 1, 8, 8))
    path = save_compressed(tmp_path / "m.pt", model, config, TINY)
    names = ["os:abort", "sys:exit", "builtins:eval"]
    files = [str(_with_model(path, n, tmp_path)) for n in names]
    done = subprocess.run(
        [sys.executable, "-c", CRAFTED, *files], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "survived" and len(lines) == 4, done.stdout
    for name, line in zip(names, lines):
        assert f"built from user code {name}; pass model='{name}'" in line


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("input_shape", "1,8,8", "input_shape must be"),
        ("input_shape", [1, 8], "input_shape must be"),
        ("input_shape", [1, 10**9, 8], "input_shape must be"),
        ("input_shape", [1.0, 8, 8], "input_shape must be"),
        ("num_classes", 10**12, "num_classes must be"),
        ("num_classes", True, "num_classes must be"),
        ("num_classes", "10", "num_classes must be"),
        ("model", 5, "names no architecture"),
        ("config", "ratios", "compression config must be a mapping"),
    ],
)
def test_malformed_headers_raise_checkpoint_error(tmp_path, field, value, message):
    config = CompressionConfig()
    model = compress(build_for("tiny_cnn", (1, 8, 8), 10), config, torch.zeros(1, 1, 8, 8))
    payload = torch.load(save_compressed(tmp_path / "m.pt", model, config, TINY), weights_only=True)
    (payload if field == "config" else payload["base"])[field] = value
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=message):
        load_compressed_file(tmp_path / "bad.pt")


@pytest.mark.slow
def test_a_search_of_a_user_model_still_reloads_its_front(tmp_path, monkeypatch):
    """The search names its own user architecture when it reloads trial files (finalize)."""
    from prunetune.cli import main
    from tests.helpers import FAST, load_study

    (tmp_path / "canary_mod.py").write_text(CANARY)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = [a if a != "tiny_cnn" else "canary_mod:build" for a in FAST]
    assert main(["search", *args, "--study", "u", "--trials", "2", "--bits", "32"]) == 0
    assert load_study(tmp_path, "u").user_attrs["test_accuracy"]
