"""Export of a Python API search's trial: the CLI's export (prunetune.export: file, reload in its
runtime, verification, timing next to the base, card, MLflow run + registered version) with the
inputs an in-memory model has -- the caller's example input instead of a data set's test images,
its test_fn (if any) for the PyTorch model's test accuracy, no int8 (no calibration data)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from prunetune.compress import load_compressed_file
from prunetune.export.assemble import Origin
from prunetune.export.choice import choose_trial, trial_weights
from prunetune.export.files import (
    check_export_flags,
    check_output,
    load_compressed,
    output_folder,
)
from prunetune.export.inputs import VERIFY_IMAGES, ExportInputs
from prunetune.export.mlflow_log import log_export
from prunetune.export.report import Card, write_card
from prunetune.export.verified import write_verified
from prunetune.search.records import TrialRecord

VERIFY_SEED = 0


def verify_inputs(example: torch.Tensor, n: int = VERIFY_IMAGES // 4) -> torch.Tensor:
    """`example` followed by seeded standard-normal inputs of its shape (n in all)."""
    g = torch.Generator().manual_seed(VERIFY_SEED)
    noise = torch.randn(n - len(example), *example.shape[1:], generator=g)
    return torch.cat([example, noise])


def export_user_trial(
    run,
    rec: TrialRecord,
    out_dir: str | Path,
    *,
    fmt: str = "onnx",
    register: bool = True,
    fps_repeats: int = 21,
    retrain: int = 0,
    log: Callable[[str], None] = lambda m: None,
) -> Card:
    """Export trial `rec` of SearchRun `run` to `out_dir` as `fmt`, verified (see the module
    docstring); the Card. With `retrain` > 0, the caller's train_fn runs that many more times on
    the reloaded model first (a recovery fine-tune; the card gives eval_fn's accuracy before and
    after). PrunetuneError for an incomplete trial or one whose weights were not kept."""
    check_export_flags(fmt, int8=False, retrain_epochs=retrain)
    check_output(out_dir, log)
    rec = choose_trial(run.result, trial=rec.number)
    setup = run.setup
    base = setup.base.model
    model, header = load_compressed_file(
        trial_weights(rec, run.study_name, run.tracking_uri), base_model=base
    )
    retrained = _recovery_fine_tune(setup.workload, model, rec, retrain, log) if retrain else None
    inputs = ExportInputs(
        base=base,
        example=setup.example,
        verify=verify_inputs(setup.example),
        test_set=None,
        torch_test=setup.workload.test_accuracy,
        calibration=None,
        load=lambda path: load_compressed(path, base_model=base),
        base_metrics=setup.base.meta["metrics"],
        base_checkpoint=None,
        threads=setup.config.measurement.threads,
        verify_label="inputs (example_input, then seeded random inputs of its shape)",
    )
    card = write_verified(
        model,
        header,
        rec,
        inputs,
        output_folder(out_dir),
        fmt=fmt,
        int8=False,
        fps_repeats=fps_repeats,
        origin=Origin(
            run.study_name,
            setup.config.stores.storage_url,
            f"trial {rec.number}",
            runtime=setup.config.measurement.runtime,
            result=run.result,
        ),
        retrain=retrained,
        log=log,
    )
    if register:
        return log_export(card, rec, run.tracking_uri, log)
    write_card(card)
    return card


def _recovery_fine_tune(
    workload, model: torch.nn.Module, rec: TrialRecord, times: int, log: Callable[[str], None]
) -> dict:
    """The user's train_fn `times` more times on `model` (in place), seeded by the trial; what it
    did, for the card (eval_fn's accuracy before and after)."""
    import time

    before = workload.evaluate(model, "cpu")["accuracy"]
    log(f"recovery fine-tune of trial {rec.number}: train_fn {times} more time(s)")
    start = time.perf_counter()
    for i in range(times):
        workload.finetune(model, rec.seed + i, "cpu")
    return {
        "epochs": times,
        "lr": None,
        "loss": [],
        "seconds": time.perf_counter() - start,
        "device": "cpu",
        "val_accuracy_before": before,
        "val_accuracy": workload.evaluate(model, "cpu")["accuracy"],
    }
