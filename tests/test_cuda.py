"""The device choice (--device): checked and recorded everywhere; on a CUDA machine, a tiny search
and training/evaluation on the GPU with the base model, FPS and saved weights on the CPU. The CUDA
tests run where torch sees a GPU and are skipped with their reason elsewhere."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunetune.cli import main
from prunetune.config import SearchSettings
from prunetune.errors import ConfigError
from tests.helpers import FAST, load_study, search_args

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU: torch.cuda.is_available() is False here",
)
TINY = dict(
    model="tiny_cnn",
    dataset="digits",
    base_epochs=2,
    epochs=1,
    subset=200,
    fps_repeats=3,
    bits=[32, 8],
    trials=2,
)


def _state(model: nn.Module) -> list[tuple[str, int, float]]:
    """Each parameter's and buffer's device, storage address and sum: any move or change shows."""
    return [
        (str(t.device), t.data_ptr(), float(t.detach().double().sum()))
        for t in (*model.parameters(), *model.buffers())
    ]


# -- everywhere -----------------------------------------------------------------------------------
def test_device_names_are_checked_by_the_config():
    assert SearchSettings().measurement.device == "auto"
    for ok in ("auto", "cpu", "cuda", "cuda:1"):
        assert (
            SearchSettings.from_flat(device=ok).measurement.device == ok
        )  # CUDA's presence is checked where it is used
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        SearchSettings.from_flat(device="gpu")
    with pytest.raises(ConfigError, match="--gpus-per-trial decides"):
        SearchSettings.from_flat(
            backend="ray", device="cuda"
        )  # no GPU per trial: trials would run on the CPU
    with pytest.raises(ConfigError, match="--gpus-per-trial decides"):
        SearchSettings.from_flat(backend="ray", device="cpu", gpus_per_trial=1.0)
    assert (
        SearchSettings.from_flat(
            backend="ray", device="cuda", gpus_per_trial=0.5
        ).measurement.device
        == "cuda"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_cuda_requested_without_one_is_one_line_before_anything_is_written(isolated, capsys):
    assert main(search_args("nocuda", 2, "--device", "cuda")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "prunetune: error: --device cuda requested, but torch sees no CUDA device"
    )
    assert "\n" not in err
    assert not (isolated / "mlruns").exists()
    assert main(["train", "--dataset", "digits", "--device", "cuda:1"]) == 2
    assert "--device cuda:1 requested" in capsys.readouterr().err


def test_the_device_is_recorded_and_a_distilled_trial_leaves_the_base_model_alone(isolated):
    """A real (tiny) setup and trial on the CPU: the device decided once, recorded in the
    base metrics and the record; the shared base model's parameters and buffers are the same
    storage with the same values after a distilled trial. (The move that broke later trials only
    happens where the trial's device is not the base's: see the CUDA test below.)"""
    from prunetune.search.objective import prepare_search, run_trial

    cfg = SearchSettings.from_flat(
        **TINY, device="cpu", distill=0.5, study="dev", strategy="search"
    )  # warm starts
    setup = prepare_search(cfg, weights_dir=isolated / "w")
    before = _state(setup.base.model)
    rec = run_trial(setup, setup.space.warm_start()[0], 0)
    assert rec.state == "complete", rec.reason
    assert _state(setup.base.model) == before and not setup.base.model.training
    assert setup.device == rec.device == setup.base_metrics["device"] == "cpu"


# -- CUDA -----------------------------------------------------------------------------------------
@needs_cuda
def test_training_and_evaluation_run_on_cuda_and_leave_models_on_the_cpu():
    from prunetune.models import Recipe, evaluate, train
    from prunetune.models.training import device_of
    from tests.models.test_training import _bn_net, _data

    model, teacher, data = _bn_net(), _bn_net(), _data()
    teacher_before = _state(teacher)
    hist = train(
        model,
        data,
        Recipe(epochs=2, batch_size=50, distill_alpha=0.5),
        seed=0,
        device="cuda",
        teacher=teacher,
    )
    assert device_of(model).type == "cpu" and _state(teacher) == teacher_before
    assert hist.loss[-1] < hist.loss[0]
    on_gpu, on_cpu = evaluate(model, data, device="cuda"), evaluate(model, data, device="cpu")
    assert device_of(model).type == "cpu"
    assert abs(on_gpu["accuracy"] - on_cpu["accuracy"]) <= 0.01  # TF32 may flip an image or two


@needs_cuda
def test_a_distilled_trial_on_cuda_leaves_the_base_model_on_the_cpu(isolated):
    from prunetune.compress import compress, load_compressed_file
    from prunetune.search.objective import prepare_search, run_trial

    setup = prepare_search(
        SearchSettings.from_flat(
            **TINY, device="cuda", distill=0.5, study="gpu", strategy="search"
        ),
        weights_dir=isolated / "w",
    )
    assert setup.device == "cuda:0" and setup.base_metrics["device"] == "cuda:0"
    before = _state(setup.base.model)
    for number, params in enumerate(setup.space.warm_start()):
        rec = run_trial(setup, params, number)
        assert rec.state == "complete", rec.reason + rec.traceback
        assert rec.device == "cuda:0" and rec.metrics["fps"] > 0 and rec.metrics["speedup"] > 0
        reloaded, _ = load_compressed_file(rec.weights)
        assert {t.device.type for t in reloaded.state_dict().values()} == {"cpu"}
    assert _state(setup.base.model) == before  # never moved: later compress() still works
    config = setup.space.decode(setup.space.warm_start()[0])
    compress(copy.deepcopy(setup.base.model), config, setup.example_input())


@needs_cuda
def test_a_tiny_search_on_cuda(isolated):
    assert (
        main(
            [
                "search",
                *FAST,
                "--study",
                "cuda",
                "--trials",
                "3",
                "--device",
                "cuda",
                "--distill",
                "0.5",
                "--keep-all-weights",
            ]
        )
        == 0
    )
    study = load_study(isolated, "cuda")
    assert study.user_attrs["config"]["device"] == "cuda"
    assert study.user_attrs["base_metrics"]["device"] == "cuda:0"
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 3
    assert {t.user_attrs["record"]["device"] for t in done} == {"cuda:0"}
