"""What an export verifies and times a trial with (prunetune.export.inputs): the verification set
is labelled test images unless the caller says otherwise, and holds at most VERIFY_IMAGES."""

from __future__ import annotations

import torch
from torch import nn

from prunetune.export.inputs import VERIFY_IMAGES, ExportInputs
from prunetune.search.user_export import verify_inputs
from tests.export.builders import export_inputs


def test_the_verification_set_is_test_images_unless_named():
    inputs = export_inputs(nn.Linear(2, 2), torch.zeros(3, 2))
    assert isinstance(inputs, ExportInputs) and inputs.verify_label == "test images"


def test_an_in_memory_models_verification_set_stays_within_the_bound():
    example = torch.zeros(1, 1, 4, 4)
    assert 0 < len(verify_inputs(example)) <= VERIFY_IMAGES
