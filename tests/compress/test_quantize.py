"""Per-layer fake quantization: levels, straight-through gradients, activation ranges, size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.compress import apply_quantization, calibrate_activations, size_bytes
from prunetune.errors import ConfigError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny() -> nn.Sequential:
    """conv 3->4 (3x3, 108 weights + 4 bias), BN(4), pooling, linear 4->2 (8 weights + 2 bias)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_weights_take_at_most_2_pow_b_minus_1_values_per_output_channel(bits):
    torch.manual_seed(bits)
    model = nn.Sequential(nn.Conv2d(8, 6, 5), nn.Flatten(), nn.Linear(6, 300))
    float_weights = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    apply_quantization(model, bits)
    levels = 2**bits - 1
    for layer, w in zip((model[0], model[2]), float_weights):
        q = layer.weight.detach()
        counts = [torch.unique(q[c]).numel() for c in range(q.shape[0])]
        assert max(counts) <= levels
        if w[0].numel() >= 8 * levels:  # wide enough rows use every level
            assert max(counts) == levels
        amax = w.flatten(1).abs().amax(1)
        assert torch.allclose(q.flatten(1).abs().amax(1), amax)  # the extreme weight is a level
        scale = (amax / (2 ** (bits - 1) - 1)).view(-1, *[1] * (w.dim() - 1))
        assert ((q - w).abs() <= scale / 2 + 1e-6).all()


def test_32_bits_leave_a_layer_float_and_untouched():
    model = _tiny()
    before = model[5].weight.detach().clone()
    apply_quantization(model, {"0": 4})
    assert not hasattr(model[5], "parametrizations") and not hasattr(model[5], "input_quant")
    assert torch.equal(model[5].weight, before)
    assert hasattr(model[0], "input_quant")


def test_gradients_flow_through_fake_quantization():
    model = apply_quantization(_tiny().train(), 3)
    x = torch.randn(8, 3, 6, 6, requires_grad=True)
    nn.functional.cross_entropy(model(x), torch.randint(0, 2, (8,))).backward()
    original = model[0].parametrizations.weight.original
    assert original.grad is not None and original.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0
    before = original.detach().clone()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(before, original.detach())


def test_straight_through_gradient_is_the_float_gradient():
    layer = nn.Linear(5, 3)
    x = torch.randn(4, 5)
    apply_quantization(nn.Sequential(layer), 4, act_bits=32)
    layer(x).sum().backward()
    # d(sum(x W^T))/dW = column sums of x, whatever the quantized values are
    expected = x.sum(0).expand(3, 5)
    torch.testing.assert_close(layer.parametrizations.weight.original.grad, expected)


def test_activation_ranges_are_running_buffers():
    model = apply_quantization(_tiny(), {"0": 8}, act_bits=8)
    quant = model[0].input_quant
    assert not bool(quant.observed)
    model.eval()(torch.randn(2, 3, 6, 6))  # eval before any observation: dynamic, stores nothing
    assert not bool(quant.observed)
    model.train()(torch.randn(4, 3, 6, 6) * 2)
    lo, hi = float(quant.lo), float(quant.hi)
    assert bool(quant.observed) and lo < 0 < hi
    model.train()(torch.randn(4, 3, 6, 6) * 10)
    assert float(quant.hi) > hi  # EMA moved toward the wider batch
    assert {"0.input_quant.lo", "0.input_quant.hi", "0.input_quant.observed"} <= set(
        model.state_dict()
    )
    x = torch.randn(2, 3, 6, 6)
    seen = []
    model[0].register_forward_hook(lambda m, args, out: seen.append(args[0]))
    model.eval()(x)
    assert torch.unique(seen[0]).numel() <= 256


def test_calibration_observes_ranges_without_touching_batch_norm():
    model = apply_quantization(_tiny(), 4)
    bn_mean = model[1].running_mean.clone()
    used = calibrate_activations(
        model, [(torch.randn(4, 3, 6, 6), None) for _ in range(3)], batches=2
    )
    assert used == 2 and bool(model[0].input_quant.observed) and bool(model[5].input_quant.observed)
    assert torch.equal(model[1].running_mean, bn_mean) and model.training


def test_quantized_state_dict_loads_into_a_freshly_quantized_model():
    model = apply_quantization(_tiny(), {"0": 3, "5": 5})
    model.train()(torch.randn(4, 3, 6, 6))
    clone = apply_quantization(_tiny(), {"0": 3, "5": 5})
    clone.load_state_dict(model.state_dict())
    x = torch.randn(3, 3, 6, 6)
    assert torch.equal(clone.eval()(x), model.eval()(x))


def test_size_accounting_by_hand():
    model = _tiny()
    bn = 4 * (
        4 + 4 + 4 + 4
    )  # weight, bias, running mean, running var; num_batches_tracked not counted
    assert size_bytes(model, 32) == 4 * (108 + 4) + bn + 4 * (8 + 2)
    # conv at 4 bits: ceil(108*4/8) = 54 bytes + 4 fp32 scales + fp32 bias; linear float
    assert size_bytes(model, {"0": 4}) == (54 + 4 * 4 + 4 * 4) + bn + 4 * (8 + 2)
    # conv at 3 bits: ceil(40.5) = 41; linear at 2 bits: 2 bytes + 2 scales + 2 biases
    expected = (41 + 16 + 16) + bn + (2 + 8 + 8)
    assert size_bytes(model, {"0": 3, "5": 2}) == expected
    apply_quantization(model, {"0": 3, "5": 2})  # a quantized model has the same packed size
    assert size_bytes(model, {"0": 3, "5": 2}) == expected


@pytest.mark.parametrize("bits", [1, 9, 16, 4.0, True, "8"])
def test_bit_widths_not_allowed_raise_config_error(bits):
    with pytest.raises(ConfigError, match="bit-width"):
        apply_quantization(_tiny(), bits)
    with pytest.raises(ConfigError, match="bit-width"):
        apply_quantization(_tiny(), {"0": bits})
    with pytest.raises(ConfigError, match="bit-width"):
        size_bytes(_tiny(), {"5": bits})


def test_unknown_layers_and_double_quantization_raise_config_error():
    with pytest.raises(
        ConfigError, match="unknown layer 'fc' for a bit-width; quantizable layers: 0, 5"
    ):
        apply_quantization(_tiny(), {"fc": 4})
    with pytest.raises(ConfigError, match="bit-width for activations"):
        apply_quantization(_tiny(), 4, act_bits=9)
    model = apply_quantization(_tiny(), {"0": 4})
    with pytest.raises(ConfigError, match="already quantized: 0"):
        apply_quantization(model, 8)
    assert not hasattr(model[5], "parametrizations")  # nothing applied by the failed call
