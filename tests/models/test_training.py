"""Training helpers on tiny real models: batch-norm recalibration."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from prunetune.data import BalancedSubsetSampler
from prunetune.models import evaluate, pruned_lr, recalibrate_bn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n: int = 400) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 4
    x = torch.randn(n, 1, 6, 6, generator=g) + 3.0 * y.view(-1, 1, 1, 1)  # class = brightness
    return TensorDataset(x, y)


def test_recalibration_restores_statistics_that_no_longer_match():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, 3, padding=1)
    model = nn.Sequential(conv, nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(108, 4))
    data = _data()
    bn = model[1]
    bn.running_mean.fill_(50.0)  # stale, as after pruning and a few fine-tune steps
    bn.running_var.fill_(0.01)
    sampler = BalancedSubsetSampler(data.tensors[1], per_class=100, seed=0)
    assert recalibrate_bn(model, data, sampler=sampler, batch_size=50) == 1
    with torch.no_grad():
        acts = conv(data.tensors[0])  # all 400 images were sampled, in 8 equal batches
    # the average of the batches' means is the mean; of their variances, close to the variance
    assert torch.allclose(bn.running_mean, acts.mean(dim=(0, 2, 3)), atol=1e-4)
    assert torch.allclose(bn.running_var, acts.var(dim=(0, 2, 3)), rtol=0.05)
    assert bn.momentum == 0.1 and not model.training
    assert evaluate(model, data)["accuracy"] >= 0  # runs in eval mode afterwards


def test_a_model_without_batch_norm_is_left_alone():
    class Untouchable(nn.Module):
        def forward(self, x):
            raise AssertionError("no forward pass expected")

    data = _data(40)
    sampler = BalancedSubsetSampler(data.tensors[1], per_class=10, seed=0)
    assert recalibrate_bn(nn.Sequential(nn.Linear(4, 4), Untouchable()), data, sampler=sampler) == 0


def _params(model: nn.Module) -> list[tuple[torch.device, int, float]]:
    """Each parameter's device, storage address and sum: any move or change shows."""
    return [(p.device, p.data_ptr(), float(p.detach().sum())) for p in model.parameters()]


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(108, 4)
    )


def test_a_model_given_the_cpu_is_trained_and_evaluated_where_it_is():
    """The device is an argument: on "cpu" nothing moves (the same parameter storage before and
    after). On this CPU-only machine the old default-device pick also stayed on the CPU, so this
    guards the contract; tests/test_cuda.py checks the move-and-back on a GPU."""
    from prunetune.models import Recipe, train

    model, data = _bn_net(), _data()
    before = [(d, ptr) for d, ptr, _ in _params(model)]
    train(model, data, Recipe(epochs=1, batch_size=50), seed=0, device="cpu")
    sampler = BalancedSubsetSampler(data.tensors[1], per_class=20, seed=0)
    recalibrate_bn(model, data, sampler=sampler, device=torch.device("cpu"))
    evaluate(model, data, device="cpu")
    assert [(d, ptr) for d, ptr, _ in _params(model)] == before
    assert not model.training


def test_a_teacher_is_never_changed_by_distillation():
    """The teacher (in a search: the shared base model) is read, never moved or switched to eval
    mode: one in training mode is distilled from through an eval-mode copy. (Before, train() called
    teacher.to(device).eval() on the caller's model.)"""
    from prunetune.models import Recipe, train

    student, teacher, data = _bn_net(), _bn_net().train(), _data()
    before, stats = _params(teacher), teacher[1].running_mean.clone()
    hist = train(
        student,
        data,
        Recipe(epochs=1, batch_size=50, distill_alpha=0.5),
        seed=0,
        device="cpu",
        teacher=teacher,
    )
    assert teacher.training, "the caller's teacher was switched to eval mode"
    assert _params(teacher) == before and torch.equal(teacher[1].running_mean, stats)
    assert len(hist.loss) == 1 and hist.loss[0] > 0


def test_device_names_resolve_or_fail_in_one_line():
    from prunetune.errors import ConfigError
    from prunetune.models import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto") == expected
    for bad in ("gpu", "cuda:", "CPU", "cuda:x"):
        with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    with pytest.raises(ConfigError, match=r"--device cuda:99 requested, but torch sees"):
        resolve_device("cuda:99")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")


def test_the_fine_tune_learning_rate_grows_below_a_quarter_of_the_macs_as_its_steps_allow():
    assert pruned_lr(1e-3, 1.0, 1.5, 120) == pytest.approx(1e-3)
    assert pruned_lr(1e-3, 0.25, 1.5, 120) == pytest.approx(1e-3)
    assert pruned_lr(1e-3, 0.15, 1.5, 120) == pytest.approx(1e-3 * (0.25 / 0.15) ** 1.5)
    assert pruned_lr(1e-3, 0.05, 1.5, 120) == pytest.approx(1e-2)  # 11x, capped at 10x
    assert pruned_lr(1e-3, 0.05, 1.5, 16) == pytest.approx(4e-3)  # 16 steps: at most 4x
    assert pruned_lr(1e-3, 0.0, 1.5, 0) == pytest.approx(1e-3)  # no steps: no boost
    assert pruned_lr(1e-3, 0.05, 0.0, 120) == 1e-3  # scaling 0: every model at lr
