"""Exporting a trial of a Python API search (prunetune.search.user_export): the inputs the exported
model is verified on. (Whole exports of a user's model: tests/search/test_python_api.py and
tests/test_recovery_finetune.py.)"""

from __future__ import annotations

import torch

from prunetune.search.user_export import verify_inputs


def test_verification_inputs_are_the_example_then_seeded_noise_of_its_shape():
    example = torch.full((2, 1, 4, 4), 7.0)
    state = torch.random.get_rng_state()
    inputs = verify_inputs(example, n=10)
    assert torch.equal(torch.random.get_rng_state(), state)  # its own generator
    assert inputs.shape == (10, 1, 4, 4) and torch.equal(inputs[:2], example)
    assert torch.equal(verify_inputs(example, n=10), inputs)  # the same inputs every time
    noise = inputs[2:]
    assert abs(float(noise.mean())) < 0.5 and 0.5 < float(noise.std()) < 1.5
