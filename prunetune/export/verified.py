"""One trial's compressed model written, reloaded from its file, verified and timed: the card of a
verified export (`write_verified`), whichever way the trial was searched."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from torch import nn

from prunetune.compress import CompressionConfig, save_compressed
from prunetune.errors import PrunetuneError
from prunetune.export.assemble import Measured, Origin, card_data
from prunetune.export.card import CardData
from prunetune.export.files import CARD_MD, WEIGHTS_FILE, write_model
from prunetune.export.inputs import ExportInputs
from prunetune.export.report import Card, write_card
from prunetune.export.timing import time_next_to_base
from prunetune.export.verify import file_runner, verify
from prunetune.runtimes import materialize
from prunetune.search.records import TrialRecord

ACCURACY_TOLERANCE = 0.005  # re-evaluated vs recorded test accuracy (fraction), without retraining


def _write_files(
    model: nn.Module,
    plain: nn.Module,
    header: dict,
    inputs: ExportInputs,
    out: Path,
    *,
    fmt: str,
    int8: bool,
    meta: dict,
) -> Path:
    """compressed.pt of `model` and, unless `fmt` is state-dict, the model file of `plain` (its
    materialized float copy) in `out`; the file to verify."""
    config = CompressionConfig.from_dict(header["config"])
    weights = save_compressed(out / WEIGHTS_FILE, model, config, header["base"], meta=meta)
    if fmt == "state-dict":
        return weights
    return write_model(
        plain,
        fmt,
        inputs.example,
        out,
        calibration=inputs.calibration if int8 else None,
        layer_bits=config.bits,
    )


def _measure(
    path: Path,
    plain: nn.Module,
    inputs: ExportInputs,
    base_ref: dict,
    *,
    fmt: str,
    int8: bool,
    repeats: int,
    export_seconds: float,
    test_accuracy_torch: float | None,
    log: Callable[[str], None],
) -> Measured:
    """`path` reloaded in its runtime, verified against `plain` (the float PyTorch model) and timed
    next to the base exported the same way."""
    run = file_runner(path, fmt, inputs.threads, load=inputs.load)
    checked, tested = verify(run, plain, inputs, int8=int8)
    log(f"timing {path.name} next to the base model ({inputs.threads} thread(s), batch 1)")
    base_run, base_bytes, timings = time_next_to_base(run, inputs, fmt, base_ref, repeats=repeats)
    return Measured(
        file=path,
        base_bytes=base_bytes,
        export_seconds=export_seconds,
        run=run,
        base_run=base_run,
        timings=timings,
        repeats=repeats,
        verification=checked,
        test_accuracy=tested,
        test_accuracy_torch=test_accuracy_torch,
    )


def _warn_on_checks(d: CardData, log: Callable[[str], None]) -> None:
    """Log what an export's figures disagree on: the base checkpoint vs the search's, int8 top-1
    agreement, the file's test accuracy vs the recorded one."""
    v, searched_base = d.verification, d.recorded.base_test_accuracy
    if searched_base is not None and searched_base != d.base.test_accuracy:
        log(
            f"warning: the base checkpoint ({d.provenance.base_checkpoint}) is not the one the "
            f"search measured (test accuracy {d.base.test_accuracy:.2%}, during the search "
            f"{searched_base:.2%}): the base column describes today's checkpoint"
        )
    if d.int8 and not v.outputs_match:
        log(
            f"warning: the int8 model agrees with the float model on only {v.top1_agreement:.1%} "
            f"of {v.images} test images"
        )
    if v.accuracy_delta is not None and abs(v.accuracy_delta) > ACCURACY_TOLERANCE:
        log(
            f"warning: test accuracy through {d.compressed.runtime} is "
            f"{d.compressed.test_accuracy:.2%}, {v.accuracy_delta * 100:+.2f} points from the "
            f"{d.recorded.test_accuracy:.2%} recorded during the search"
        )


def write_verified(
    model: nn.Module,
    header: dict,
    rec: TrialRecord,
    inputs: ExportInputs,
    out: Path,
    *,
    fmt: str,
    int8: bool,
    fps_repeats: int,
    origin: Origin,
    retrain: dict | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> Card:
    """Write `model` (a trial's compressed model, as loaded) to `out` as `fmt`, reload the file in
    its runtime, verify it against PyTorch, time it next to the base exported the same way; the
    card (not yet written). PrunetuneError (card written) when an fp32 file's outputs differ from
    PyTorch's."""
    torch_test = inputs.torch_test(model)
    model.cpu().eval()
    plain = materialize(model)
    t0 = time.perf_counter()
    meta = {"study": origin.study, "trial": rec.number}
    meta["retrain_epochs"] = (retrain or {}).get("epochs", 0)
    path = _write_files(model, plain, header, inputs, out, fmt=fmt, int8=int8, meta=meta)
    measured = _measure(
        path,
        plain,
        inputs,
        header["base"],
        fmt=fmt,
        int8=int8,
        repeats=fps_repeats,
        export_seconds=time.perf_counter() - t0,
        test_accuracy_torch=torch_test,
        log=log,
    )
    config = CompressionConfig.from_dict(header["config"])
    data = card_data(
        rec, inputs, plain, config, measured, fmt=fmt, int8=int8, origin=origin, retrain=retrain
    )
    _warn_on_checks(data, log)
    card = Card(out, data)
    if not int8 and not data.verification.outputs_match:
        write_card(card)
        raise PrunetuneError(
            f"verification failed: {path.name} differs from the PyTorch model by "
            f"{data.verification.max_abs_diff:.3g} (tolerance {data.verification.tolerance:.3g}); "
            f"not registered, see {out / CARD_MD}"
        )
    return card
