"""The card's data computed from what an export measured (compute only: `export.markdown`
renders it)."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

from torch import nn

from prunetune.compress import CompressionConfig
from prunetune.export.card import (
    BaseFigures,
    CardData,
    CompressedFigures,
    Provenance,
    Recorded,
    Timing,
    Verification,
)
from prunetune.export.inputs import ExportInputs
from prunetune.export.layers import layer_rows
from prunetune.measure import Timing as Measurement
from prunetune.measure import count_macs, count_params
from prunetune.redact import mask_url
from prunetune.runtimes import Runner
from prunetune.search.records import TrialRecord

PACKAGES = (
    "prunetune",
    "torch",
    "torchvision",
    "torch-pruning",
    "onnx",
    "onnxruntime",
    "optuna",
    "mlflow",
)


@dataclass(frozen=True)
class Measured:
    """What an export measured: its file, the base's file size, the runners of both files and their
    interleaved timings, the verification and the test accuracies through the file
    (`test_accuracy`) and in PyTorch (`test_accuracy_torch`)."""

    file: Path
    base_bytes: int
    export_seconds: float
    run: Runner
    base_run: Runner
    timings: dict[str, Measurement]
    repeats: int
    verification: Verification
    test_accuracy: float | None
    test_accuracy_torch: float | None


@dataclass(frozen=True)
class Origin:
    """Where the trial comes from: its study (name, storage), how it was chosen, the search's
    runtime and SearchResult."""

    study: str
    storage: str
    selection: str
    runtime: str
    result: object


def _package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _timing(m: Measured, threads: int) -> Timing:
    return Timing(
        compressed=m.run.runtime,
        base=m.base_run.runtime,
        threads=threads,
        batch_size=1,
        kernels=list(m.run.kernels),
        op_types=list(getattr(m.run, "op_types", ())),
        repeats=m.repeats,
    )


def _base_figures(inputs: ExportInputs, m: Measured) -> BaseFigures:
    macs, t = count_macs(inputs.base, inputs.example), m.timings["base"]
    return BaseFigures(
        runtime=m.base_run.runtime,
        test_accuracy=inputs.base_metrics.get("test_accuracy"),
        val_accuracy=inputs.base_metrics.get("val_accuracy"),
        macs=macs,
        flops=2 * macs,
        params=count_params(inputs.base),
        file_bytes=m.base_bytes,
        fps=t.fps,
        latency_ms=t.median_ms,
        fps_spread=t.spread,
    )


def _compressed_figures(
    rec: TrialRecord,
    plain: nn.Module,
    inputs: ExportInputs,
    m: Measured,
    *,
    recorded_test: float | None,
    val_accuracy: float | None,
) -> CompressedFigures:
    macs, t = count_macs(plain, inputs.example), m.timings["compressed"]
    return CompressedFigures(
        runtime=m.run.runtime,
        test_accuracy=m.test_accuracy,
        test_accuracy_torch=m.test_accuracy_torch,
        recorded_test_accuracy=recorded_test,
        val_accuracy=val_accuracy,
        macs=macs,
        flops=2 * macs,
        params=count_params(plain),
        file_bytes=m.file.stat().st_size,
        packed_size_bytes=rec.metrics.get("size_bytes"),
        fps=t.fps,
        latency_ms=t.median_ms,
        fps_spread=t.spread,
    )


def _recorded(rec: TrialRecord, origin: Origin) -> Recorded:
    from prunetune.search.results import user_metric_keys

    result = origin.result
    return Recorded(
        runtime=origin.runtime,
        speedup=rec.metrics.get("speedup"),
        fps=rec.metrics.get("fps"),
        val_accuracy=rec.metrics.get("accuracy"),
        test_accuracy=result.test_accuracy.get(rec.number),
        base_test_accuracy=result.base_metrics.get("test_accuracy"),
        user_metrics={k: rec.metrics[k] for k in user_metric_keys(result)},
    )


def _provenance(rec: TrialRecord, origin: Origin, inputs: ExportInputs, m: Measured) -> Provenance:
    return Provenance(
        study=origin.study,
        storage=mask_url(origin.storage),
        working_directory=str(Path.cwd()),
        trial=rec.number,
        seed=rec.seed,
        trial_weights=str(Path(rec.weights).resolve()),
        base_checkpoint=inputs.base_checkpoint,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        export_seconds=m.export_seconds,
        versions=_package_versions(),
    )


def card_data(
    rec: TrialRecord,
    inputs: ExportInputs,
    plain: nn.Module,
    config: CompressionConfig,
    measured: Measured,
    *,
    fmt: str,
    int8: bool,
    origin: Origin,
    retrain: dict | None,
) -> CardData:
    """card.json's data of trial `rec` exported as `fmt` (`plain`: its materialized float model).
    The compressed model's validation accuracy is the recovery fine-tune's when there was one;
    `verification.accuracy_delta` compares the file's test accuracy with the recorded one (None
    after a fine-tune, or when either is unknown)."""
    recorded = _recorded(rec, origin)
    tested, recorded_test = measured.test_accuracy, recorded.test_accuracy
    delta = None if recorded_test is None or retrain or tested is None else tested - recorded_test
    return CardData(
        study=origin.study,
        trial=rec.number,
        format=fmt,
        int8=int8,
        file=measured.file.name,
        selection=origin.selection,
        runtime=_timing(measured, inputs.threads),
        base=_base_figures(inputs, measured),
        compressed=_compressed_figures(
            rec,
            plain,
            inputs,
            measured,
            recorded_test=recorded_test,
            val_accuracy=retrain["val_accuracy"] if retrain else recorded.val_accuracy,
        ),
        recorded=recorded,
        verification=replace(measured.verification, accuracy_delta=delta),
        layers=layer_rows(inputs.base, plain, config.bits, int8=int8),
        config=rec.config,
        retrain=retrain,
        provenance=_provenance(rec, origin, inputs, measured),
    )
