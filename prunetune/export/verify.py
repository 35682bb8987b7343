"""Verification of an exported file: run the *file* in its own runtime (onnxruntime,
`torch.export.load`, or prunetune's loader), compare its outputs with the float PyTorch model's and
score the test accuracy through it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from prunetune.export.card import Verification
from prunetune.export.inputs import ExportInputs
from prunetune.measure import torch_threads
from prunetune.runtimes import Runner, onnx_file_runner

INT8_MIN_AGREEMENT = 0.95  # top-1 agreement of an int8 model with float PyTorch below this: fail


class ModuleRunner(Runner):
    """A torch module loaded from an exported file, run eagerly on CPU with `threads` threads."""

    def __init__(self, module: nn.Module, *, runtime: str, threads: int) -> None:
        self.module, self.runtime, self.threads = module, runtime, threads

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch_threads(self.threads), torch.inference_mode():
            return self.module(x.cpu())


def file_runner(path: Path, fmt: str, threads: int, *, load: Callable[[Path], nn.Module]) -> Runner:
    """A Runner of the exported *file* in its own runtime (not of the in-memory model); `load`
    reads a compressed.pt file (see ExportInputs)."""
    if fmt == "onnx":
        return onnx_file_runner(path, threads=threads)
    if fmt == "pt2":
        return ModuleRunner(
            torch.export.load(path).module(), runtime="torch.export (pt2)", threads=threads
        )
    return ModuleRunner(load(path), runtime="torch", threads=threads)


def _runner_accuracy(run: Runner, dataset) -> float:
    """Top-1 accuracy of `run` on a labelled data set."""
    from prunetune.models.training import batches

    correct = n = 0
    for x, y in batches(dataset, 250):
        correct += int((run(x).argmax(1) == y).sum())
        n += len(y)
    return correct / max(n, 1)


def verify(
    run: Runner, plain: nn.Module, inputs: ExportInputs, *, int8: bool
) -> tuple[Verification, float | None]:
    """Outputs of the file's runtime vs the float PyTorch model on `inputs.verify` (the first test
    images of a data set), and the test accuracy through the runtime (None without a test set).
    `outputs_match`: fp32 within float tolerance; int8 top-1 agreement >= INT8_MIN_AGREEMENT."""
    xs = inputs.verify
    with torch.inference_mode():
        ref = plain(xs)
    got = run(xs)
    diff = float((got - ref).abs().max())
    agreement = float((got.argmax(1) == ref.argmax(1)).float().mean())
    tolerance = 1e-4 * max(1.0, float(ref.abs().max()))
    checked = Verification(
        images=len(xs),
        inputs=inputs.verify_label,
        max_abs_diff=diff,
        tolerance=None if int8 else tolerance,
        output_range=float(ref.abs().max()),
        top1_agreement=agreement,
        outputs_match=agreement >= INT8_MIN_AGREEMENT if int8 else diff <= tolerance,
    )
    tested = None if inputs.test_set is None else _runner_accuracy(run, inputs.test_set)
    return checked, tested
