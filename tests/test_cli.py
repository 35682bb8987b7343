"""The command line: listings, `info`, `train`, and every user mistake ending in one clear line on
stderr with exit code 2, no traceback, and nothing half-written."""
from __future__ import annotations

import json

import pytest
import torch

from prunetune.cli import main
from tests.helpers import FAST, run_cli


def _fails_cleanly(capsys, argv, message, cwd):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("prunetune") and message in err, err
    assert "Traceback" not in err
    assert not (cwd / "mlruns").exists(), "a failed start must write nothing"


def test_info_json_reports_the_classic_net(capsys):
    assert main(["info", "--model", "mnist_net", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["macs"] == 29_425_920 and data["flops"] == 2 * 29_425_920
    assert data["params"] == 25_706_186
    assert [g["group"] for g in data["groups"]] == ["0", "2", "5"]


def test_info_table_names_unprunable_layers(capsys):
    assert main(["info", "--model", "resnet18", "--input-size", "3,32,32"]) == 0
    out = capsys.readouterr().out
    assert "total:" in out and "left unpruned: fc" in out


def test_models_and_datasets_listings(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("mnist_net", "lenet5", "lenet300_100", "cifar_cnn", "resnet18", "vgg16_bn", "mobilenet_v2"):
        assert name in out
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("mnist5k", "digits", "mnist", "fashion_mnist", "cifar10", "imagefolder"):
        assert name in out


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_macs_match_torchvision_published_ops(name):
    import torchvision

    from prunetune.measure import count_macs

    model = torchvision.models.get_model(name, num_classes=1000)
    published = torchvision.models.get_model_weights(name).DEFAULT.meta["_ops"] * 1e9
    assert count_macs(model, torch.zeros(1, 3, 224, 224)) == pytest.approx(published, rel=0.01)


@pytest.mark.parametrize("name", ["mnist_net", "lenet5", "lenet300_100", "cifar_cnn", "tiny_cnn", "resnet18",
                                  "mobilenet_v2", "vgg16_bn", "torchvision:shufflenet_v2_x0_5"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_zoo_builds_for_small_inputs(name, shape):
    from prunetune.models import build_for

    model = build_for(name, shape, 7).eval()
    assert model(torch.zeros(2, *shape)).shape == (2, 7)


def test_user_model_by_module_function(tmp_path, monkeypatch, capsys):
    (tmp_path / "mynets.py").write_text(
        "import torch.nn as nn\n"
        "def build(num_classes):\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4*26*26, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["info", "--model", "mynets:build", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 4 * 9 + 4 + 4 * 26 * 26 * 10 + 10


def test_train_saves_a_weights_only_checkpoint(isolated, capsys):
    assert main(["train", "--model", "tiny_cnn", "--dataset", "digits", "--epochs", "2",
                 "--out", "base.pt"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out
    obj = torch.load(isolated / "base.pt", weights_only=True)
    assert obj["meta"]["model"] == "tiny_cnn" and obj["meta"]["recipe"]["epochs"] == 2
    assert 0.5 < obj["meta"]["metrics"]["test_accuracy"] <= 1.0


BAD_FLAGS = [
    (["--model", "no_such_net"], "unknown model 'no_such_net'"),
    (["--model", "torchvision:no_such_net"], "unknown torchvision model"),
    (["--model", "nosuchmodule_xyz:build"], "cannot load user model"),
    (["--dataset", "imagenet21k"], "unknown dataset 'imagenet21k'"),
    (["--sampler", "annealing"], "unknown sampler"),
    (["--objectives", "accuracy,latency"], "unknown objective 'latency'"),
    (["--importance", "l3"], "unknown importance criterion 'l3'"),
    (["--runtime", "tensorrt"], "unknown runtime 'tensorrt'"),
    (["--trials", "0"], "trials must be >= 1"),
    (["--trials", "-3"], "trials must be >= 1"),
    (["--ratio-max", "1.0"], "ratio_max < 1"),
    (["--bits", "32,9"], "not allowed"),
    (["--select", "max fps when accuracy>0.9"], "rule"),
    (["--dataset", "mnist", "--data-root", "/no/such/folder"], "does not exist"),
    (["--dataset", "cifar10"], "give --data-root"),
    (["--config", "missing.yaml"], "does not exist"),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_search_input_is_one_clear_line(isolated, capsys, flags, message):
    _fails_cleanly(capsys, ["search", *FAST, "--trials", "2", *flags], message, isolated)


@pytest.mark.parametrize("text, message", [
    ("colour: red\n", "unknown key"),
    ("groups:\n  '0': {ratio: [0.0, 1.5]}\n", "0 <= min <= max < 1"),
    ("groups:\n  '0': {ratio: [0.0, 'x']}\n", "must be a number"),
    ("bits: {choices: [32, 12]}\n", "not allowed"),
    ("groups:\n  nope: {ratio: [0.0, 0.5]}\n", "unknown group"),
])
def test_bad_space_file(isolated, capsys, text, message):
    (isolated / "space.yaml").write_text(text)
    _fails_cleanly(capsys, ["search", *FAST, "--trials", "2", "--space", "space.yaml"], message, isolated)


def test_checkpoint_errors(isolated, capsys):
    (isolated / "junk.pt").write_bytes(b"not a checkpoint at all")
    _fails_cleanly(capsys, ["search", *FAST, "--checkpoint", "junk.pt"], "cannot read checkpoint", isolated)
    _fails_cleanly(capsys, ["search", *FAST, "--checkpoint", "nope.pt"], "does not exist", isolated)
    assert main(["train", "--model", "lenet5", "--dataset", "digits", "--epochs", "1", "--out", "lenet.pt"]) == 0
    capsys.readouterr()
    data = (isolated / "lenet.pt").read_bytes()
    (isolated / "trunc.pt").write_bytes(data[: len(data) // 2])
    _fails_cleanly(capsys, ["search", *FAST, "--checkpoint", "trunc.pt"], "cannot read checkpoint", isolated)
    _fails_cleanly(capsys, ["search", *FAST, "--checkpoint", "lenet.pt"], "does not fit this model", isolated)


def test_unwritable_tracking_location(isolated, capsys):
    (isolated / "blocker").write_text("a file where a folder should be")
    _fails_cleanly(capsys, ["search", *FAST, "--tracking-uri", "sqlite:///blocker/sub/mlflow.db"],
                   "cannot be created", isolated)


def test_study_name_reused_with_another_space_is_refused(isolated, capsys):
    assert main(["search", *FAST, "--study", "s", "--trials", "1"]) == 0
    capsys.readouterr()
    code = main(["search", *FAST, "--study", "s", "--trials", "2", "--ratio-max", "0.5"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "different search space" in err and len(err.splitlines()) == 1


def test_pareto_of_unknown_study(isolated, capsys):
    assert main(["search", *FAST, "--study", "s", "--trials", "1"]) == 0
    capsys.readouterr()
    assert main(["pareto", "--study", "other"]) == 2
    assert "no study 'other'" in capsys.readouterr().err


def test_argparse_errors_are_one_line_in_a_real_process(isolated):
    res = run_cli(["search", "--trials", "many"], isolated)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    res = run_cli(["search", *FAST, "--model", "no_such_net"], isolated)
    assert res.returncode == 2 and res.stderr.strip() == \
        "prunetune: error: unknown model 'no_such_net'; known: cifar_cnn, lenet300_100, lenet5, mnist_net, " \
        "mobilenet_v2, resnet18, tiny_cnn, vgg16_bn"


def test_sensitivity_scan_table_plot_and_narrowed_space(isolated, capsys):
    from prunetune.spaces import SearchSpace

    assert main(["sensitivity", "--model", "tiny_cnn", "--dataset", "digits", "--base-epochs", "2",
                 "--ratios", "0.25,0.9", "--plot", "sens.png", "--space-out", "narrow.yaml",
                 "--max-drop", "0.05", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    groups = sorted({r["group"] for r in rows})
    assert len(rows) == 2 * len(groups) and (isolated / "sens.png").stat().st_size > 1000
    space = SearchSpace.from_yaml(isolated / "narrow.yaml")
    for g in groups:
        allowed = [r["ratio"] for r in rows if r["group"] == g and r["drop"] <= 0.05]
        assert space.groups[g].high == max([0.0, *allowed])
    assert all(r["macs"] > 0 for r in rows)
