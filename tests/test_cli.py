"""The command line: listings, `info`, `train`, and every user mistake ending in one clear line on
stderr with exit code 2, no traceback, and nothing half-written."""

from __future__ import annotations

import json

import pytest
import torch

from prunetune.cli import main
from tests.helpers import FAST, run_cli, search_args


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
    for name in (
        "mnist_net",
        "lenet5",
        "lenet300_100",
        "cifar_cnn",
        "resnet18",
        "vgg16_bn",
        "mobilenet_v2",
    ):
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


@pytest.mark.parametrize(
    "name",
    [
        "mnist_net",
        "lenet5",
        "lenet300_100",
        "cifar_cnn",
        "tiny_cnn",
        "resnet18",
        "mobilenet_v2",
        "vgg16_bn",
        "torchvision:shufflenet_v2_x0_5",
    ],
)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_zoo_builds_for_small_inputs(name, shape):
    from prunetune.models import build_for

    model = build_for(name, shape, 7).eval()
    assert model(torch.zeros(2, *shape)).shape == (2, 7)


def test_user_model_by_module_function(tmp_path, monkeypatch, capsys):
    (tmp_path / "mynets.py").write_text(
        "import torch.nn as nn\n"
        "def build(num_classes):\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), "
        "nn.Linear(4*26*26, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["info", "--model", "mynets:build", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 4 * 9 + 4 + 4 * 26 * 26 * 10 + 10


def test_train_saves_a_weights_only_checkpoint(isolated, capsys):
    assert (
        main(
            [
                "train",
                "--model",
                "tiny_cnn",
                "--dataset",
                "digits",
                "--epochs",
                "2",
                "--out",
                "base.pt",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "test accuracy" in out
    obj = torch.load(isolated / "base.pt", weights_only=True)
    assert obj["meta"]["model"] == "tiny_cnn" and obj["meta"]["recipe"]["epochs"] == 2
    assert 0.5 < obj["meta"]["metrics"]["test_accuracy"] <= 1.0


def test_train_and_search_with_one_recipe_share_the_cached_base(isolated, capsys, monkeypatch):
    """`train --lr 0.01 ...` caches a base; `search --base-lr 0.01 ...` (the same recipe under
    search's names) loads that file instead of training another; search's default recipe would
    not have found it."""
    from prunetune.config import SearchSettings
    from prunetune.models.checkpoint import cache_key
    from prunetune.search.objective import base_recipe
    from tests.helpers import search_args

    monkeypatch.setenv("PRUNETUNE_HOME", str(isolated / "home"))  # an empty cache of its own
    assert (
        main(
            [
                "train",
                "--model",
                "tiny_cnn",
                "--dataset",
                "digits",
                "--epochs",
                "2",
                "--lr",
                "0.01",
                "--batch-size",
                "32",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    assert "training base tiny_cnn" in capsys.readouterr().err
    cached = sorted((isolated / "home" / "checkpoints").glob("*.pt"))
    assert len(cached) == 1
    assert torch.load(cached[0], weights_only=True)["meta"]["recipe"]["lr"] == 0.01
    assert (
        main(
            search_args(
                "same-base", 1, "--base-lr", "0.01", "--base-batch-size", "32", "--base-seed", "3"
            )
        )
        == 0
    )  # FAST has --base-epochs 2
    assert "training base" not in capsys.readouterr().err
    assert sorted((isolated / "home" / "checkpoints").glob("*.pt")) == cached
    default = SearchSettings.from_flat(
        model="tiny_cnn", dataset="digits", base_epochs=2, base_seed=3
    )
    assert cache_key("tiny_cnn", "digits", 3, base_recipe(default.base)) not in cached[0].name


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


@pytest.mark.parametrize(
    "text, message",
    [
        ("colour: red\n", "unknown key"),
        ("groups:\n  '0': {ratio: [0.0, 1.5]}\n", "0 <= min <= max < 1"),
        ("groups:\n  '0': {ratio: [0.0, 'x']}\n", "must be a number"),
        ("bits: {choices: [32, 12]}\n", "not allowed"),
        ("groups:\n  nope: {ratio: [0.0, 0.5]}\n", "unknown group"),
    ],
)
def test_bad_space_file(isolated, capsys, text, message):
    (isolated / "space.yaml").write_text(text)
    _fails_cleanly(
        capsys, ["search", *FAST, "--trials", "2", "--space", "space.yaml"], message, isolated
    )


def test_checkpoint_errors(isolated, capsys):
    (isolated / "junk.pt").write_bytes(b"not a checkpoint at all")
    _fails_cleanly(
        capsys, ["search", *FAST, "--checkpoint", "junk.pt"], "cannot read checkpoint", isolated
    )
    _fails_cleanly(capsys, ["search", *FAST, "--checkpoint", "nope.pt"], "does not exist", isolated)
    assert (
        main(
            [
                "train",
                "--model",
                "lenet5",
                "--dataset",
                "digits",
                "--epochs",
                "1",
                "--out",
                "lenet.pt",
            ]
        )
        == 0
    )
    capsys.readouterr()
    data = (isolated / "lenet.pt").read_bytes()
    (isolated / "trunc.pt").write_bytes(data[: len(data) // 2])
    _fails_cleanly(
        capsys, ["search", *FAST, "--checkpoint", "trunc.pt"], "cannot read checkpoint", isolated
    )
    _fails_cleanly(
        capsys, ["search", *FAST, "--checkpoint", "lenet.pt"], "does not fit this model", isolated
    )


def test_unwritable_tracking_location(isolated, capsys):
    (isolated / "blocker").write_text("a file where a folder should be")
    _fails_cleanly(
        capsys,
        ["search", *FAST, "--tracking-uri", "sqlite:///blocker/sub/mlflow.db"],
        "cannot be created",
        isolated,
    )


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
    assert (
        res.returncode == 2
        and len(res.stderr.strip().splitlines()) == 1
        and "Traceback" not in res.stderr
    )
    res = run_cli(["search", *FAST, "--model", "no_such_net"], isolated)
    assert (
        res.returncode == 2
        and res.stderr.strip()
        == "prunetune: error: unknown model 'no_such_net'; known: cifar_cnn, lenet300_100, lenet5, "
        "mnist_net, mobilenet_v2, resnet18, tiny_cnn, vgg16_bn"
    )


def test_sensitivity_scan_table_plot_and_narrowed_space(isolated, capsys):
    from prunetune.spaces import SearchSpace

    assert (
        main(
            [
                "sensitivity",
                "--model",
                "tiny_cnn",
                "--dataset",
                "digits",
                "--base-epochs",
                "2",
                "--ratios",
                "0.25,0.9",
                "--plot",
                "sens.png",
                "--space-out",
                "narrow.yaml",
                "--max-drop",
                "0.05",
                "--format",
                "json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    groups = sorted({r["group"] for r in rows})
    assert len(rows) == 2 * len(groups) and (isolated / "sens.png").stat().st_size > 1000
    space = SearchSpace.from_yaml(isolated / "narrow.yaml")
    for g in groups:
        allowed = [r["ratio"] for r in rows if r["group"] == g and r["drop"] <= 0.05]
        assert space.groups[g].high == max([0.0, *allowed])
    assert all(r["macs"] > 0 for r in rows)


BAD_MODELS = [
    ("os:system", "requires command"),
    ("builtins:eval", "requires source"),
    ("json:loads", "requires s"),
    (":", "must be package.module:function"),
    ("..x:y", "must be package.module:function"),
    ("os.path:", "must be package.module:function"),
    ("a" * 300 + ":f", "must be package.module:function"),
    ("os:getcwd", "returned str, not a torch.nn.Module"),
    ("os:sep", "is a str, not a function"),
    ("sys:exit", "raised SystemExit"),
]


@pytest.mark.parametrize("model, message", BAD_MODELS, ids=[m[:20] for m, _ in BAD_MODELS])
def test_bad_user_models_are_one_line(isolated, capsys, model, message):
    """Callables that are no model factory: refused before anything is written, and one that needs
    other arguments (os.system's command, eval's source) is never called."""
    _fails_cleanly(capsys, ["search", *FAST, "--trials", "1", "--model", model], message, isolated)
    _fails_cleanly(capsys, ["info", "--model", model], message, isolated)


def test_user_model_that_raises_is_one_line(isolated, monkeypatch, capsys):
    (isolated / "brokennets.py").write_text(
        "def build(num_classes):\n    raise RuntimeError('oops\\nsecond line')\n"
    )
    monkeypatch.syspath_prepend(str(isolated))
    _fails_cleanly(
        capsys, ["info", "--model", "brokennets:build"], "raised RuntimeError: oops", isolated
    )


BAD_NUMBERS = [
    ("--lr", "-1"),
    ("--lr", "0"),
    ("--lr", "nan"),
    ("--lr", "inf"),
    ("--max-flops", "-1"),
    ("--max-flops", "0"),
    ("--max-flops", "nan"),
    ("--max-flops", "inf"),
    ("--min-accuracy", "nan"),
    ("--min-accuracy", "1.5"),
    ("--min-accuracy", "-0.1"),
    ("--ratio-min", "-0.1"),
    ("--ratio-min", "nan"),
    ("--ratio-max", "nan"),
    ("--ratio-step", "0"),
    ("--ratio-step", "nan"),
    ("--distill", "nan"),
    ("--distill", "2"),
    ("--cpus-per-trial", "0"),
    ("--cpus-per-trial", "nan"),
    ("--cpus-per-trial", "inf"),
    ("--gpus-per-trial", "-1"),
    ("--gpus-per-trial", "nan"),
    ("--gpus-per-trial", "inf"),
    ("--seed", "-1"),
    ("--seed", str(2**32)),
    ("--base-seed", "-5"),
    ("--fps-repeats", "0"),
    ("--subset", "0"),
    ("--batch-size", "0"),
    ("--threads", "0"),
    ("--workers", "0"),
    ("--round-to", "0"),
    ("--epochs", "-1"),
    ("--base-epochs", "0"),
    ("--objectives", "accuracy,accuracy"),
    ("--bits", "32,8,8"),
    ("--importance", "l2,l2"),
]


@pytest.mark.parametrize("flag, value", BAD_NUMBERS, ids=[f"{f} {v}" for f, v in BAD_NUMBERS])
def test_meaningless_numbers_are_refused(isolated, capsys, flag, value):
    key = flag[2:].replace("-", "_")
    _fails_cleanly(capsys, ["search", *FAST, "--trials", "1", f"{flag}={value}"], key, isolated)


def test_binary_garbage_config_is_one_line(isolated, capsys):
    (isolated / "garbage.yaml").write_bytes(bytes(range(256)) * 4)
    _fails_cleanly(
        capsys, ["search", *FAST, "--config", "garbage.yaml"], "is not UTF-8 text", isolated
    )


def test_select_with_an_unknown_metric_is_refused_before_any_trial(isolated, capsys):
    _fails_cleanly(
        capsys,
        ["search", *FAST, "--select", "max speed where accuracy >= 0.5"],
        "unknown metric 'speed'",
        isolated,
    )


BAD_HEADERS = {
    "no meta": {"format": "prunetune-base/1"},
    "meta not a mapping": {
        "format": "prunetune-base/1",
        "meta": [1, 2],
        "state_dict": {"w": torch.zeros(1)},
    },
    "no state_dict": {"format": "prunetune-base/1", "meta": {}},
    "state_dict of non-tensors": {"format": "prunetune-base/1", "meta": {}, "state_dict": {"w": 1}},
    "model not a name": {
        "format": "prunetune-base/1",
        "meta": {"model": 3},
        "state_dict": {"w": torch.zeros(1)},
    },
    "metrics not numbers": {
        "format": "prunetune-base/1",
        "meta": {"metrics": {"val_accuracy": "high"}},
        "state_dict": {"w": torch.zeros(1)},
    },
    "another format": {"format": "prunetune-base/9", "meta": {}, "state_dict": {}},
    "format not a string": {"format": 1, "meta": {}, "state_dict": {}},
}


@pytest.mark.parametrize("header", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_malformed_checkpoint_headers(isolated, capsys, header):
    from prunetune.errors import CheckpointError
    from prunetune.models import read_checkpoint

    torch.save(header, isolated / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt"):
        read_checkpoint(isolated / "bad.pt")
    _fails_cleanly(capsys, ["search", *FAST, "--checkpoint", "bad.pt"], "bad.pt", isolated)


def test_checkpoint_without_metrics_gets_them_measured(isolated, capsys):
    """A valid header whose meta lacks (some) metrics is usable: they are measured."""
    from prunetune.config import SearchSettings
    from prunetune.data import create_dataset
    from prunetune.models import build_for, get_base_model
    from prunetune.search.objective import base_recipe

    bundle = create_dataset("digits")
    sd = build_for("tiny_cnn", bundle).state_dict()
    torch.save(
        {
            "format": "prunetune-base/1",
            "meta": {"metrics": {"val_accuracy": 0.5}},
            "state_dict": sd,
        },
        isolated / "partial.pt",
    )
    base = get_base_model(
        "tiny_cnn",
        bundle,
        recipe=base_recipe(SearchSettings().base),
        checkpoint=isolated / "partial.pt",
    )
    assert {"val_accuracy", "test_accuracy"} <= set(base.meta["metrics"])


@pytest.mark.slow
def test_select_that_picks_nothing_keeps_the_report(isolated, capsys):
    """The budget is spent either way: the table and CSV are written, a one-line warning says
    nothing was selected, nothing is registered, exit 0. (A dotted, dashed study name on the
    way.)"""
    from mlflow.tracking import MlflowClient

    study = "run.1-a_b"
    assert (
        main(
            [
                "search",
                *FAST,
                "--trials",
                "2",
                "--study",
                study,
                "--select",
                "max fps where accuracy >= 1.5",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "Pareto front of study 'run.1-a_b'" in captured.out
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert (
        len(warnings) == 1
        and "--select picks nothing" in warnings[0]
        and "accuracy >= 1.5" in warnings[0]
    )
    csv = isolated / "mlruns" / "prunetune" / study / "pareto_front.csv"
    assert csv.is_file() and csv.read_text().startswith("trial,")
    client = MlflowClient(tracking_uri=f"sqlite:///{isolated / 'mlruns' / 'mlflow.db'}")
    assert client.search_model_versions(f"name = 'prunetune-{study}'") == []
    assert client.get_experiment_by_name(study) is not None


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs=0"], "--epochs must be >= 1, got 0"),
        (["--batch-size=0"], "--batch-size must be >= 1, got 0"),
        (["--lr=nan"], "--lr must be a finite number > 0"),
        (["--lr=-1"], "--lr must be"),
        (["--seed=-1"], "--seed must be in [0, 2**32)"),
    ],
)
def test_train_numbers_are_checked(isolated, capsys, flags, message):
    _fails_cleanly(
        capsys,
        ["train", "--model", "tiny_cnn", "--dataset", "digits", "--out", "b.pt", *flags],
        message,
        isolated,
    )
    assert not (isolated / "b.pt").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ratios=0.5,nan"], "ratios must be in [0, 1)"),
        (["--max-drop=nan"], "--max-drop is a fraction"),
        (["--seed=-1"], "base_seed must be in [0, 2**32)"),
    ],
)
def test_sensitivity_numbers_are_checked_before_training(isolated, capsys, flags, message):
    _fails_cleanly(
        capsys,
        ["sensitivity", "--model", "tiny_cnn", "--dataset", "digits", *flags],
        message,
        isolated,
    )


TWO_OUTPUTS = """
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 8, 3), nn.Linear(8, num_classes)

    def forward(self, x):
        f = self.conv(x).mean((2, 3))
        return self.head(f), f


def build(num_classes):
    return Net(num_classes)
"""


def test_a_user_model_returning_a_tuple_is_one_line_before_training(isolated, monkeypatch, capsys):
    """A forward returning (logits, features) or a dict is refused, not guessed at (documented)."""
    (isolated / "two_outputs.py").write_text(TWO_OUTPUTS)
    monkeypatch.syspath_prepend(str(isolated))
    assert (
        main(["search", "--model", "two_outputs:build", "--dataset", "digits", "--trials", "1"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "forward returns a tuple, not one tensor" in err[0], err
    assert not (isolated / "mlruns").exists()


def test_a_resume_with_another_recipe_is_recorded_and_named(isolated, capsys):
    """Decided: recorded, not refused (resuming with more epochs is a legitimate way to go on): one
    warning line names the changed keys, the stored config becomes the new one and the change is
    kept in the study's config_history with the first trial it applies to (it used to be accepted
    silently while the stored config kept the old recipe)."""
    from tests.helpers import load_study

    assert main(search_args("recipe", 1)) == 0
    capsys.readouterr()
    assert main(search_args("recipe", 2, "--epochs", "0", "--lr", "0.5")) == 0
    err = capsys.readouterr().err
    assert (
        "warning: resuming study 'recipe' with another recipe (epochs 1 -> 0, lr 0.001 -> 0.5)"
        in err
    )
    attrs = load_study(isolated, "recipe").user_attrs
    assert attrs["config"]["epochs"] == 0 and attrs["config"]["lr"] == 0.5
    first = attrs["config_history"][0]["from_trial"]
    assert attrs["config_history"] == [
        {"from_trial": first, "changed": {"epochs": [1, 0], "lr": [0.001, 0.5]}}
    ]
    assert main(search_args("recipe", 3, "--epochs", "0", "--lr", "0.5")) == 0
    assert "another recipe" not in capsys.readouterr().err  # the same recipe again: nothing to say
    assert len(load_study(isolated, "recipe").user_attrs["config_history"]) == 1


def test_a_study_from_before_lr_scaling_resumes_with_the_change_named(isolated, capsys):
    """A study stored before --lr-scaling existed fine-tuned every trial at --lr (scaling 0): its
    resume names the change instead of silently mixing two recipes in one study."""
    from tests.helpers import load_study

    assert main(search_args("old", 1)) == 0
    study = load_study(isolated, "old")
    stored = dict(study.user_attrs["config"])
    assert stored.pop("lr_scaling") == 1.5
    study.set_user_attr("config", stored)
    capsys.readouterr()
    assert main(search_args("old", 2)) == 0
    assert "another recipe (lr_scaling 0.0 -> 1.5)" in capsys.readouterr().err
    assert main(search_args("old", 3, "--lr-scaling", "-1")) == 2
    assert "lr_scaling must be in [0, 2], got -1.0" in capsys.readouterr().err


def test_threads_beyond_the_cores_warn(isolated, capsys):
    """Decided: warn (one line) rather than refuse: FPS is measured oversubscribed."""
    assert main(search_args("t", 1, "--threads", "1000", "--tracking-uri", "file:///nowhere")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("warning: --threads 1000 is more than the") and len(err) == 2, err


def test_base_training_prints_one_progress_line_per_epoch(isolated, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PRUNETUNE_HOME", str(tmp_path / "fresh-home"))
    assert main(["train", "--model", "tiny_cnn", "--dataset", "digits", "--epochs", "2"]) == 0
    err = capsys.readouterr().err
    assert "base epoch 1/2: loss" in err and "base epoch 2/2: loss" in err, err
