"""What the export tests build by hand: a report card with every figure set (`card_data`), the
inputs of an export of an in-memory model (`export_inputs`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from prunetune.export.card import (
    BaseFigures,
    CardData,
    CompressedFigures,
    Layer,
    Provenance,
    Recorded,
    Timing,
    Verification,
)
from prunetune.export.inputs import ExportInputs


def card_data(**changes) -> CardData:
    """A float ONNX export of trial 3: 4x faster, 5x smaller, test accuracy 91 % (base 93 %)."""
    data = CardData(
        study="s",
        trial=3,
        format="onnx",
        int8=False,
        file="model.onnx",
        selection="knee",
        runtime=Timing("onnxruntime", "onnxruntime", 1, 1, [], ["Conv", "Gemm"], 21),
        base=BaseFigures("onnxruntime", 0.93, 0.94, 1000, 2000, 500, 10_000, 100.0, 10.0, 0.01),
        compressed=CompressedFigures(
            "onnxruntime", 0.91, 0.91, 0.9, 0.92, 250, 500, 120, 2_000, 480, 400.0, 2.5, 0.02
        ),
        recorded=Recorded("onnxruntime", 3.9, 390.0, 0.92, 0.9, 0.93, {"map": 0.4}),
        verification=Verification(64, "test images", 4e-6, 4e-3, 40.0, 1.0, True, 0.01),
        layers=[Layer("0", "Conv2d", 8, 4, 32, "float32")],
        config={"ratios": {"0": 0.5}, "bits": {}},
        retrain=None,
        provenance=Provenance(
            "s", "sqlite:///x.db", "/w", 3, 1003, "/w/trial_3.pt", None, "2026-12-07", 1.5, {}
        ),
    )
    return replace(data, **changes)


def export_inputs(
    base: nn.Module,
    verify: torch.Tensor,
    *,
    test_set=None,
    load: Callable[[Path], nn.Module] | None = None,
    base_metrics: dict | None = None,
    torch_test: float | None = None,
) -> ExportInputs:
    """Float-only inputs (no int8 calibration) on one thread: `verify`'s first input is the
    example; `load` reads a compressed.pt (default: the base itself)."""
    return ExportInputs(
        base=base,
        example=verify[:1],
        verify=verify,
        test_set=test_set,
        torch_test=lambda m: torch_test,
        calibration=None,
        load=load or (lambda path: base),
        base_metrics=base_metrics or {},
        base_checkpoint=None,
        threads=1,
    )
