"""What an export verifies, times and documents a trial with (`ExportInputs`), whichever way the
trial was searched: a CLI study's data set (`export.study`) or a Python API search's in-memory
model (`search.user_export`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

VERIFY_IMAGES = 256


@dataclass
class ExportInputs:
    """What an export verifies, times and documents a trial with, wherever the trial came from (a
    CLI study's data set, or a Python API search's in-memory model). `verify`: the inputs whose
    outputs are compared; `test_set`: labelled data scored through the exported file (None: not
    measured); `torch_test(model)`: the PyTorch model's test accuracy (None: no test data);
    `calibration`: int8 calibration batches (None: no int8); `load(path)`: a compressed.pt file as
    a torch module."""

    base: nn.Module
    example: torch.Tensor
    verify: torch.Tensor
    test_set: object | None
    torch_test: Callable[[nn.Module], float | None]
    calibration: list[torch.Tensor] | None
    load: Callable[[Path], nn.Module]
    base_metrics: dict
    base_checkpoint: str | None
    threads: int
    verify_label: str = "test images"
