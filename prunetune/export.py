"""Export the chosen trial's compressed model, verified, with a report card.

Call order of `export_model`: choose the trial (--trial, a --select rule, or the knee of the front)
-> reload its stored weights (the exact model whose numbers are on the front; nothing is retrained
unless asked) -> optional final fine-tune on the full training split -> write the model file
(onnx | pt2 | state-dict; --int8 = ONNX Runtime static int8 of the ONNX model) -> verify: reload
the *file* in its own runtime (onnxruntime, `torch.export.load`, or prunetune's loader), compare its
outputs with the PyTorch model, re-evaluate test accuracy through it, and time it next to the base
model exported the same way -> card.json (the computed data) and card.md (`card_markdown`, rendering
only) -> log the export as an MLflow run nested under the study's search run and register it as a
model version whose source is that run's `export` artifact folder (skipped, and said so in the card,
when the study has no MLflow experiment or its artifacts live outside the tracking folder).

Every export directory also holds `compressed.pt` (prunetune's state-dict format), so
`load_compressed(DIR)` returns the model as a float torch module whatever the format. Weight
bit-widths are baked into the float weights (`runtimes.materialize`); activation fake-quant is a
search-time simulation and is not part of fp32 exports (with --int8, ONNX Runtime quantizes the
activations for real).
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch
from torch import nn

from prunetune.compress import CompressionConfig, load_compressed_file, save_compressed
from prunetune.compress.artifact import check_model_name
from prunetune.errors import ConfigError, PrunetuneError
from prunetune.measure import Timing, count_macs, count_params, torch_threads
from prunetune.models import Recipe, evaluate, recalibrate_bn, train
from prunetune.models.training import DivergedError
from prunetune.paths import check_writable_folder, probe_writable
from prunetune.redact import is_masked, mask_url
from prunetune.runtimes import (
    INT8_BITS,
    Runner,
    materialize,
    measure_fps,
    onnx_file_runner,
    quantize_onnx_int8,
    to_onnx,
)
from prunetune.search.records import COMPLETE, TrialRecord

FORMATS = ("onnx", "pt2", "state-dict")
WEIGHTS_FILE = "compressed.pt"
CARD_JSON, CARD_MD = "card.json", "card.md"
MODEL_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx", "pt2": "model.pt2"}
ARTIFACT_PATH = "export"  # folder of the export run's artifacts; the model version's source
VERIFY_IMAGES = 256
ACCURACY_TOLERANCE = 0.005  # re-evaluated vs recorded test accuracy (fraction), without retraining
INT8_MIN_AGREEMENT = 0.95  # top-1 agreement of an int8 model with float PyTorch below this: warn
PT2_MAX_BATCH = 4096
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


@dataclass
class Card:
    """The report card of one export: `data` is what DIR/card.json holds, `directory` is DIR."""

    directory: Path
    data: dict

    @property
    def model_path(self) -> Path:
        return self.directory / self.data["file"]

    def summary(self) -> str:
        """One paragraph for the terminal (rendering only)."""
        d, c, b, v = (
            self.data,
            self.data["compressed"],
            self.data["base"],
            self.data["verification"],
        )
        return (
            f"exported trial {d['trial']} of study {d['study']} to {self.model_path} "
            f"({d['format']}{', int8' if d['int8'] else ''}): test accuracy {_pct(c['test_accuracy'])} "
            f"(base {_pct(b['test_accuracy'])}), {c['file_bytes'] / 1e6:.2f} MB "
            f"({d['size_ratio']:.1f}x smaller), {c['fps']:,.0f} FPS ({d['speedup']:.1f}x the base; "
            f"{c['runtime']} vs {b['runtime']}, {d['runtime']['threads']} thread(s)); "
            f"verified: {verification_text(v, int8=d['int8'])}"
        )


def verification_text(v: dict, *, int8: bool) -> str:
    """The verification in words, with the criterion that applies: float exports must equal the
    PyTorch model's outputs within a float tolerance; int8 ones must agree on the top-1 class for
    >= INT8_MIN_AGREEMENT of the images (their logits differ by int8 rounding, so a raw |diff| of
    a few units is expected and reported relative to the logits' range)."""
    verdict = "pass" if v["outputs_match"] else "FAIL"
    if int8:
        rng = v.get("output_range")
        rel = f", {v['max_abs_diff'] / rng:.1%} of the logits' range {rng:.3g}" if rng else ""
        return (
            f"int8 check {verdict}: top-1 agreement with the float model {v['top1_agreement']:.2%} of "
            f"{v['images']} {v.get('inputs', 'test images')} (needs >= {INT8_MIN_AGREEMENT:.0%}); logits differ by up to "
            f"{v['max_abs_diff']:.3g} (int8 rounding{rel})"
        )
    return (
        f"float check {verdict}: outputs equal to PyTorch's within {v['tolerance']:.1e} (max |diff| "
        f"{v['max_abs_diff']:.1e}) on {v['images']} {v.get('inputs', 'test images')}, top-1 agreement "
        f"{v['top1_agreement']:.2%}"
    )


class _ModuleRunner(Runner):
    """A torch module loaded from an exported file, run eagerly on CPU with `threads` threads."""

    def __init__(self, module: nn.Module, *, runtime: str, threads: int) -> None:
        self.module, self.runtime, self.threads = module, runtime, threads

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        threads = (
            contextlib.nullcontext()
            if torch.get_num_threads() == self.threads
            else torch_threads(self.threads)
        )
        with threads, torch.inference_mode():
            return self.module(x.cpu())


# ------------------------------------------------------------------------------------ choosing


def choose_trial(result, *, trial: int | None = None, select: str | None = None) -> TrialRecord:
    """The trial to export from a SearchResult: trial number `trial` (any complete trial), the front
    member chosen by the `select` rule, or else the knee of the front. PrunetuneError for an unknown
    or incomplete trial, or a study without a complete trial; ConfigError for a bad rule."""
    if trial is not None and select:
        raise ConfigError("give either a trial number or a selection rule, not both")
    if trial is not None:
        try:
            rec = result.record(trial)
        except KeyError:
            raise PrunetuneError(f"study {result.study_name!r} has no trial {trial}") from None
        if rec.state != COMPLETE:
            raise PrunetuneError(
                f"trial {trial} of study {result.study_name!r} is {rec.state}"
                f"{' (' + rec.reason + ')' if rec.reason else ''}; export a complete trial"
            )
        return rec
    from prunetune.search.results import selected

    chosen = selected(result, select)
    if chosen is None:
        raise PrunetuneError(f"study {result.study_name!r} has no complete trial to export")
    return chosen


# ----------------------------------------------------------------------------- files, runners


def _write_model(
    model: nn.Module,
    fmt: str,
    example: torch.Tensor,
    directory: Path,
    *,
    calibration: list[torch.Tensor] | None = None,
    layer_bits: dict[str, int] | None = None,
) -> Path:
    """Write the materialized float `model` to `directory` as `fmt` (onnx | pt2; int8 ONNX when
    `calibration` batches are given, keeping layers above 8 bits float) and return the file."""
    if fmt == "pt2":
        batch = torch.export.Dim("batch", min=1, max=PT2_MAX_BATCH)
        program = torch.export.export(
            model, (example.repeat(2, 1, 1, 1),), dynamic_shapes=({0: batch},)
        )
        path = directory / MODEL_FILES["pt2"]
        torch.export.save(program, path)
        return path
    if calibration is None:
        return Path(to_onnx(model, example, directory / MODEL_FILES["onnx"]))
    keep_float = [name for name, bits in (layer_bits or {}).items() if bits > INT8_BITS]
    return Path(
        quantize_onnx_int8(
            to_onnx(model, example),
            calibration,
            exclude=keep_float,
            path=directory / MODEL_FILES["onnx-int8"],
        )
    )


def _file_runner(
    path: Path, fmt: str, threads: int, *, load: Callable[[Path], nn.Module]
) -> Runner:
    """A Runner of the exported *file* in its own runtime (not of the in-memory model); `load`
    reads a compressed.pt file (see ExportInputs)."""
    if fmt == "onnx":
        return onnx_file_runner(path, threads=threads)
    if fmt == "pt2":
        return _ModuleRunner(
            torch.export.load(path).module(), runtime="torch.export (pt2)", threads=threads
        )
    return _ModuleRunner(load(path), runtime="torch", threads=threads)


def _runner_accuracy(run: Runner, dataset) -> float:
    from prunetune.models.training import batches

    correct = n = 0
    for x, y in batches(dataset, 250):
        correct += int((run(x).argmax(1) == y).sum())
        n += len(y)
    return correct / max(n, 1)


def _verify(run: Runner, plain: nn.Module, inputs: ExportInputs, *, int8: bool) -> dict:
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
    match = agreement >= INT8_MIN_AGREEMENT if int8 else diff <= tolerance
    return {
        "images": len(xs),
        "inputs": inputs.verify_label,
        "max_abs_diff": diff,
        "tolerance": None if int8 else tolerance,
        "output_range": float(ref.abs().max()),
        "top1_agreement": agreement,
        "outputs_match": match,
        "test_accuracy": None
        if inputs.test_set is None
        else _runner_accuracy(run, inputs.test_set),
    }


def _runs_int8(layer: str, bits: dict[str, int], int8: bool) -> bool:
    """Whether an --int8 export runs `layer` int8: as on the search's onnxruntime-int8 runtime, every
    Conv2d/Linear layer at <= 8 bits or not named in the trial's `bits`; layers above stay float."""
    return int8 and bits.get(layer, INT8_BITS) <= INT8_BITS


def _weighted(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def _width(module: nn.Module) -> int:
    return getattr(module, "out_channels", getattr(module, "out_features", 0))


def _layers(
    base: nn.Module, compressed: nn.Module, bits: dict[str, int], *, int8: bool
) -> list[dict]:
    """Per Conv2d/Linear layer: output channels of the base and of the compressed model, the trial's
    weight bits (32 = float) and how the exported file runs it (int8 | float32)."""
    widths = {n: _width(m) for n, m in _weighted(base).items()}
    return [
        {
            "layer": n,
            "type": type(m).__name__,
            "base_channels": widths.get(n),
            "kept_channels": _width(m),
            "bits": bits.get(n, 32),
            "runs_as": "int8" if _runs_int8(n, bits, int8) else "float32",
        }
        for n, m in _weighted(compressed).items()
    ]


def _package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


# ------------------------------------------------------------------------------------ export


def trial_weights(rec: TrialRecord, study: str, uri: str | None) -> Path:
    """The trial's weights file: where the search stored it, else (another machine, the search's
    folder gone) downloaded from the study's MLflow runs into this folder's
    mlruns/prunetune/<study>/weights/. PrunetuneError when neither has it."""
    if rec.weights and Path(rec.weights).is_file():
        return Path(rec.weights)
    if rec.weights:
        from prunetune.search.tracking import fetch_front_weights

        from prunetune.paths import inside, study_dir

        fetched = fetch_front_weights(
            uri, study, Path(rec.weights).name, inside(study_dir(study), "weights")
        )
        if fetched is not None:
            return fetched
    raise PrunetuneError(
        f"the weights of trial {rec.number} were not kept (only the Pareto front's "
        f"are, unless the search ran with --keep-all-weights): export a front member"
    )


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


def check_export_flags(fmt: str, int8: bool, retrain_epochs: int = 0) -> None:
    """ConfigError for an unknown format or a flag combination that cannot be exported."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ConfigError(
            f"--int8 is ONNX Runtime static int8: use it with --format onnx, not {fmt}"
        )
    if retrain_epochs < 0:
        raise ConfigError(f"--retrain-epochs must be >= 0, got {retrain_epochs}")


def check_int8(model: nn.Module, config: CompressionConfig, rec: TrialRecord, int8: bool) -> None:
    """PrunetuneError for --int8 on a trial whose layers are all float (nothing to quantize)."""
    if int8 and not any(_runs_int8(n, config.bits, int8) for n in _weighted(model)):
        raise PrunetuneError(
            f"trial {rec.number} keeps every layer float (32 bits), so --int8 would quantize "
            f"nothing: export it without --int8, or choose a trial with layers at 8 bits or less"
        )


EXPORT_NAMES = (*MODEL_FILES.values(), WEIGHTS_FILE, CARD_JSON, CARD_MD)


def check_output(out_dir: str | Path, log: Callable[[str], None] = lambda m: None) -> Path:
    """Check `out_dir` before anything is loaded or written, writing nothing: it can be created
    and written (not under a file, not on a read-only filesystem), and the files an export writes
    (EXPORT_NAMES) are either absent or an earlier prunetune export's (its card.json says so),
    which this one replaces (logged). A model.onnx, card.json, ... of anything else is never
    overwritten: PrunetuneError, one line."""
    out = Path(out_dir)
    check_writable_folder(out, "output")
    probe_writable(out, "output")
    present = [n for n in EXPORT_NAMES if (out / n).exists()] if out.is_dir() else []
    if not present:
        return out
    earlier = _earlier_export(out)
    if earlier is None:
        raise PrunetuneError(
            f"output folder {str(out)!r} already holds {', '.join(present)}, not "
            f"written "
            "by a prunetune export (no card.json of one): pass a new or empty "
            "--out"
        )
    log(
        f"replacing the earlier export in {str(out)!r} (study {earlier['study']!r}, trial "
        f"{earlier['trial']}, {earlier['file']})"
    )
    return out


def _earlier_export(out: Path) -> dict | None:
    """The card.json data of the prunetune export in `out`, or None when there is none."""
    try:
        data = json.loads((out / CARD_JSON).read_text())
    except (OSError, ValueError):
        return None
    ours = isinstance(data, dict) and {"study", "trial", "file", "provenance"} <= data.keys()
    return data if ours else None


def output_folder(out_dir: str | Path) -> Path:
    """`out_dir` created, the files of an earlier export in it removed (check_output allowed
    only those), so the folder holds exactly one export."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in EXPORT_NAMES:
            (out / name).unlink(missing_ok=True)
    except OSError as exc:
        raise PrunetuneError(
            f"cannot write the output folder {str(out)!r}: {exc.strerror}"
        ) from None
    return out


def export_model(
    study_name: str,
    *,
    storage: str,
    out_dir: str | Path,
    trial: int | None = None,
    select: str | None = None,
    fmt: str = "onnx",
    int8: bool = False,
    retrain_epochs: int = 0,
    tracking_uri: str | None = None,
    register: bool = True,
    fps_repeats: int = 21,
    model: str | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> Card:
    """Export, verify and document one trial of a study (see the module docstring); return its card.

    `--int8` keeps the trial's layers above 8 bits float (see `_layers`). `tracking_uri` defaults to
    the one the search used; `register=False` skips MLflow. `model`: the `package.module:function` a
    study of a user architecture was built from (never imported because the study or file says so;
    CheckpointError without it). Relative paths (storage, stored weights) are resolved against the
    working directory, as during the search. Raises ConfigError for a bad
    format / flag combination; PrunetuneError for an unknown study or trial, an incomplete trial, a
    trial whose weights were not kept, --int8 on a trial with every layer float, or an fp32 file
    whose outputs do not match PyTorch (its card is written, nothing is registered).
    """
    from prunetune.config import SearchSettings
    from prunetune.search.results import summarize
    from prunetune.search.study import load_existing

    check_export_flags(fmt, int8, retrain_epochs)
    check_output(out_dir, log)
    result = summarize(load_existing(storage, study_name))
    rec = choose_trial(result, trial=trial, select=select)
    if not result.config:
        raise PrunetuneError(f"study {study_name!r} holds no prunetune search configuration")
    cfg = SearchSettings.from_stored(result.config)
    check_model_name(cfg.task.model, model)
    tracking_uri = search_tracking_uri(tracking_uri, cfg.stores.tracking_uri)
    rec.weights = str(trial_weights(rec, study_name, tracking_uri))
    compressed, header = load_compressed_file(rec.weights, model=model)
    check_int8(compressed, CompressionConfig.from_dict(header["config"]), rec, int8)
    out = output_folder(out_dir)
    inputs, bundle = _dataset_inputs(cfg, rec, int8, model, log)
    retrain = (
        _retrain(compressed, bundle, cfg, rec, retrain_epochs, log) if retrain_epochs else None
    )
    selection = f"trial {trial}" if trial is not None else select or "knee of the Pareto front"
    card = write_verified(
        compressed,
        header,
        rec,
        inputs,
        out,
        fmt=fmt,
        int8=int8,
        fps_repeats=fps_repeats,
        study=(study_name, storage, selection),
        searched=(cfg.measurement.runtime, result),
        retrain=retrain,
        log=log,
    )
    if register:
        log_export(card, rec, tracking_uri, log)
    else:
        write_card(card)
    return card


def search_tracking_uri(given: str | None, stored: str | None) -> str | None:
    """The tracking URI an export uses: `given`, else the search's `stored` one. A stored URI is
    kept with its password masked (prunetune.redact): then $MLFLOW_TRACKING_URI or --tracking-uri
    must give the real one (PrunetuneError, one line, otherwise)."""
    import os

    if given or not is_masked(stored):
        return given or stored
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None  # tracking.requested_uri takes it
    raise PrunetuneError(
        f"the study's tracking URI is stored without its password ({stored}): "
        f"pass "
        "--tracking-uri with the credentials, or set MLFLOW_TRACKING_URI"
    )


def _dataset_inputs(
    cfg, rec: TrialRecord, int8: bool, model: str | None, log
) -> tuple[ExportInputs, object]:
    """(ExportInputs, DataBundle) of a CLI study: its data set's test images, its base model."""
    from prunetune.data import create_dataset
    from prunetune.models import get_base_model
    from prunetune.search.objective import base_recipe
    from prunetune.search.workload import calibration_batches

    bundle = create_dataset(cfg.task.dataset, data_root=cfg.task.data_root)
    base = get_base_model(
        cfg.task.model,
        bundle,
        recipe=base_recipe(cfg.base),
        seed=cfg.base.seed,
        checkpoint=cfg.task.checkpoint,
        log=log,
    )
    verify = torch.stack([bundle.test[i][0] for i in range(min(VERIFY_IMAGES, len(bundle.test)))])
    return ExportInputs(
        base=base.model,
        example=bundle.example_input(1),
        verify=verify,
        test_set=bundle.test,
        torch_test=lambda m: evaluate(m, bundle.test)["accuracy"],
        calibration=calibration_batches(bundle, rec.seed) if int8 else None,
        load=lambda path: load_compressed(path, model=model),
        base_metrics=base.meta.get("metrics", {}),
        base_checkpoint=str(base.path) if base.path else None,
        threads=cfg.measurement.threads,
    ), bundle


def _retrain(model: nn.Module, bundle, cfg, rec: TrialRecord, epochs: int, log) -> dict:
    """The final fine-tune of --retrain-epochs on the whole training split (lr halved, batch norms
    re-estimated as after a trial), in place; what it did, for the card."""
    from prunetune.models import resolve_device
    from prunetune.search.workload import recalibration_sampler

    device = resolve_device(
        cfg.measurement.device
    )  # the search's choice; the model stays on the CPU
    log(
        f"fine-tuning trial {rec.number} for {epochs} epoch(s) on the full training split ({device})"
    )
    try:
        hist = train(
            model,
            bundle.train,
            Recipe(epochs=epochs, lr=cfg.finetune.lr / 2, batch_size=cfg.finetune.batch_size),
            seed=rec.seed,
            device=device,
            train_threads=cfg.measurement.train_threads,
        )
    except DivergedError as exc:
        raise PrunetuneError(
            f"fine-tuning trial {rec.number} diverged ({exc}); export it without "
            f"--retrain-epochs or with fewer epochs"
        ) from None
    recalibrate_bn(
        model, bundle.train, sampler=recalibration_sampler(bundle, rec.seed), device=device
    )
    return {
        "epochs": epochs,
        "lr": cfg.finetune.lr / 2,
        "loss": hist.loss,
        "seconds": hist.seconds,
        "device": str(device),
        "val_accuracy_before": rec.metrics.get("accuracy"),
        "train_threads": hist.threads.as_context() if hist.threads else None,
        "val_accuracy": evaluate(model, bundle.val, device=device)["accuracy"],
    }


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
    study: tuple[str, str, str],
    searched: tuple[str, object],
    retrain: dict | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> Card:
    """Write `model` (a trial's compressed model, as loaded) to `out` as `fmt`, reload the file in
    its runtime, verify it against PyTorch, time it next to the base exported the same way; the
    card (not yet written). `study`: (name, storage, how the trial was chosen); `searched`: (the
    search's runtime, its SearchResult). PrunetuneError (card written) when an fp32 file's outputs
    differ from PyTorch's."""
    config, base_ref = CompressionConfig.from_dict(header["config"]), header["base"]
    torch_test = inputs.torch_test(model)
    model.cpu().eval()
    plain = materialize(model)
    t0 = time.perf_counter()
    weights = save_compressed(
        out / WEIGHTS_FILE,
        model,
        config,
        base_ref,
        meta={
            "study": study[0],
            "trial": rec.number,
            "retrain_epochs": (retrain or {}).get("epochs", 0),
        },
    )
    path = (
        weights
        if fmt == "state-dict"
        else _write_model(
            plain,
            fmt,
            inputs.example,
            out,
            calibration=inputs.calibration if int8 else None,
            layer_bits=config.bits,
        )
    )
    export_s = time.perf_counter() - t0
    run = _file_runner(path, fmt, inputs.threads, load=inputs.load)
    verification = _verify(run, plain, inputs, int8=int8)
    log(f"timing {path.name} next to the base model ({inputs.threads} thread(s), batch 1)")
    base_run, base_bytes, timings = _time_next_to_base(
        run, inputs, fmt, base_ref, repeats=fps_repeats
    )
    files = {
        "path": path,
        "bytes": path.stat().st_size,
        "base_bytes": base_bytes,
        "export_s": export_s,
    }
    data = _card_data(
        rec,
        inputs,
        plain,
        config,
        files,
        (run, base_run, timings),
        verification,
        torch_test,
        fmt=fmt,
        int8=int8,
        study=study,
        searched=searched,
        retrain=retrain,
        repeats=fps_repeats,
    )
    _warn_on_checks(data, log)
    card = Card(out, data)
    if not int8 and not verification["outputs_match"]:
        write_card(card)
        raise PrunetuneError(
            f"verification failed: {path.name} differs from the PyTorch model by "
            f"{verification['max_abs_diff']:.3g} (tolerance {verification['tolerance']:.3g}); "
            f"not registered, see {out / CARD_MD}"
        )
    return card


def _card_data(
    rec: TrialRecord,
    inputs: ExportInputs,
    plain: nn.Module,
    config: CompressionConfig,
    files: dict,
    timed: tuple,
    verification: dict,
    torch_test: float | None,
    *,
    fmt: str,
    int8: bool,
    study: tuple[str, str, str],
    searched: tuple[str, object],
    retrain: dict | None,
    repeats: int,
) -> dict:
    """card.json's data (compute only; card_markdown renders it)."""
    from prunetune.search.results import user_metric_keys

    (study_name, storage, selection), (runtime, result) = study, searched
    run, base_run, timings = timed
    base, example = inputs.base, inputs.example
    base_macs, macs = count_macs(base, example), count_macs(plain, example)
    recorded_test = result.test_accuracy.get(rec.number)
    t_base, t_comp = timings["base"], timings["compressed"]
    data = {
        "study": study_name,
        "trial": rec.number,
        "format": fmt,
        "int8": int8,
        "file": files["path"].name,
        "selection": selection,
        "runtime": {
            "compressed": run.runtime,
            "base": base_run.runtime,
            "threads": inputs.threads,
            "batch_size": 1,
            "kernels": list(run.kernels),
            "op_types": list(getattr(run, "op_types", ())),
            "repeats": repeats,
            "protocol": "median of interleaved samples after warm-up",
        },
        "base": {
            "runtime": base_run.runtime,
            "test_accuracy": inputs.base_metrics.get("test_accuracy"),
            "val_accuracy": inputs.base_metrics.get("val_accuracy"),
            "macs": base_macs,
            "flops": 2 * base_macs,
            "params": count_params(base),
            "file_bytes": files["base_bytes"],
            "fps": t_base.fps,
            "latency_ms": t_base.median_ms,
            "fps_spread": t_base.spread,
        },
        "compressed": {
            "runtime": run.runtime,
            "test_accuracy": verification["test_accuracy"],
            "test_accuracy_torch": torch_test,
            "recorded_test_accuracy": recorded_test,
            "val_accuracy": retrain["val_accuracy"] if retrain else rec.metrics.get("accuracy"),
            "macs": macs,
            "flops": 2 * macs,
            "params": count_params(plain),
            "file_bytes": files["bytes"],
            "packed_size_bytes": rec.metrics.get("size_bytes"),
            "fps": t_comp.fps,
            "latency_ms": t_comp.median_ms,
            "fps_spread": t_comp.spread,
        },
        "speedup": t_comp.fps / t_base.fps,
        "size_ratio": files["base_bytes"] / max(files["bytes"], 1),
        "recorded": {
            "runtime": runtime,
            "speedup": rec.metrics.get("speedup"),
            "fps": rec.metrics.get("fps"),
            "val_accuracy": rec.metrics.get("accuracy"),
            "test_accuracy": recorded_test,
            "base_test_accuracy": result.base_metrics.get("test_accuracy"),
            "user_metrics": {k: rec.metrics[k] for k in user_metric_keys(result)},
        },
        "verification": {k: v for k, v in verification.items() if k != "test_accuracy"},
        "layers": _layers(base, plain, config.bits, int8=int8),
        "config": rec.config,
        "retrain": retrain,
        "provenance": {
            "study": study_name,
            "storage": mask_url(storage),
            "working_directory": str(Path.cwd()),
            "trial": rec.number,
            "seed": rec.seed,
            "trial_weights": str(Path(rec.weights).resolve()),
            "base_checkpoint": inputs.base_checkpoint,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "export_seconds": files["export_s"],
            "versions": _package_versions(),
            "mlflow": None,
        },
    }
    tested = verification["test_accuracy"]
    data["verification"]["accuracy_delta"] = (
        None if recorded_test is None or retrain or tested is None else tested - recorded_test
    )
    return data


def _time_next_to_base(
    run: Runner, inputs: ExportInputs, fmt: str, base_ref: dict, *, repeats: int
) -> tuple[Runner, int, dict[str, Timing]]:
    """Export the float base model in `fmt` to a temporary folder, run that file in its runtime and
    time it interleaved with `run` (`runtimes.measure_fps`): (base runner, base file size, timings
    keyed "compressed" and "base")."""
    with tempfile.TemporaryDirectory(prefix="prunetune-export-base-") as tmp:
        folder = Path(tmp)
        path = (
            save_compressed(folder / WEIGHTS_FILE, inputs.base, CompressionConfig(), base_ref)
            if fmt == "state-dict"
            else _write_model(materialize(inputs.base), fmt, inputs.example, folder)
        )
        base_run = _file_runner(path, fmt, run.threads, load=inputs.load)
        timings = measure_fps(
            {"compressed": run, "base": base_run}, inputs.example, repeats=repeats
        )
        return base_run, path.stat().st_size, timings


def _warn_on_checks(data: dict, log: Callable[[str], None]) -> None:
    v, searched_base = data["verification"], data["recorded"]["base_test_accuracy"]
    if searched_base is not None and searched_base != data["base"]["test_accuracy"]:
        log(
            f"warning: the base checkpoint ({data['provenance']['base_checkpoint']}) is not the one the search "
            f"measured (test accuracy {data['base']['test_accuracy']:.2%}, during the search {searched_base:.2%}): "
            f"the base column describes today's checkpoint"
        )
    if data["int8"] and not v["outputs_match"]:
        log(
            f"warning: the int8 model agrees with the float model on only {v['top1_agreement']:.1%} "
            f"of {v['images']} test images"
        )
    if v["accuracy_delta"] is not None and abs(v["accuracy_delta"]) > ACCURACY_TOLERANCE:
        log(
            f"warning: test accuracy through {data['compressed']['runtime']} is "
            f"{data['compressed']['test_accuracy']:.2%}, {v['accuracy_delta'] * 100:+.2f} points from the "
            f"{data['recorded']['test_accuracy']:.2%} recorded during the search"
        )


def write_card(card: Card) -> None:
    """Write DIR/card.json (the data) and DIR/card.md (its rendering)."""
    (card.directory / CARD_JSON).write_text(json.dumps(card.data, indent=2, default=str) + "\n")
    (card.directory / CARD_MD).write_text(card_markdown(card.data))


# ------------------------------------------------------------------------------------ MLflow


def _latest_run(client, experiment_id: str, filter_string: str):
    runs = client.search_runs(
        [experiment_id], filter_string, order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0] if runs else None


def log_export(card: Card, rec: TrialRecord, uri: str | None, log: Callable[[str], None]) -> dict:
    """Log the export as an MLflow run nested under the study's latest search run (metrics, the
    model file, compressed.pt and the cards under `export/`), register that folder as a version
    of `prunetune-STUDY`, and write the cards. Returns the MLflow provenance."""
    from prunetune.paths import absolute_sqlite
    from prunetune.search.tracking import MlflowTracker, registered_name, requested_uri

    d = card.data
    resolved = absolute_sqlite(requested_uri(uri))  # nothing created here (see below)
    shown = mask_url(resolved)  # what the card, the log and the registry may hold
    if (
        resolved.startswith("sqlite:///")
        and not Path(resolved.removeprefix("sqlite:///")).is_file()
    ):
        return _not_registered(card, f"no MLflow store at {shown}", log)
    tracker = MlflowTracker(resolved)
    client = tracker.client
    exp = client.get_experiment_by_name(d["study"])
    if exp is None:
        return _not_registered(card, f"no MLflow experiment {d['study']!r} in {shown}", log)
    if foreign := _foreign_artifacts(resolved, exp.artifact_location):
        return _not_registered(
            card,
            f"experiment {d['study']!r} keeps its artifacts in {foreign}, outside the "
            f"tracking folder of {shown} (was the study folder copied or "
            f"moved?)",
            log,
        )
    parent = _latest_run(client, exp.experiment_id, "tags.`prunetune.role` = 'search'")
    trial_run = _latest_run(
        client,
        exp.experiment_id,
        f"tags.`prunetune.role` = 'trial' and tags.trial = '{rec.number}'",
    )
    tags = {
        "prunetune.role": "export",
        "trial": str(rec.number),
        "format": d["format"],
        "int8": str(d["int8"]),
    }
    if parent is not None:
        tags["mlflow.parentRunId"] = parent.info.run_id
    run = client.create_run(
        exp.experiment_id,
        tags=tags,
        run_name=f"export trial {rec.number} ({d['format']}{' int8' if d['int8'] else ''})",
    )
    run_id = run.info.run_id
    try:
        _log_figures(client, run_id, d)
        name = registered_name(d["study"])
        version = tracker.version_of(
            d["study"], rec.number, format=d["format"], runtime=d["runtime"]["compressed"]
        )
        if version is not None:  # the same trial, format and runtime exported again: no duplicate
            log(
                f"trial {rec.number} ({d['format']}, {d['runtime']['compressed']}) is already {name} version "
                f"{version}; not registered again"
            )
            d["provenance"]["mlflow"] = _reused(
                client, name, version, exp.experiment_id, run_id, shown
            )
        else:
            version = _register_export(tracker, card, rec, run_id)
            d["provenance"]["mlflow"] = {
                "registered": True,
                "tracking_uri": shown,
                "experiment_id": exp.experiment_id,
                "export_run_id": run_id,
                "artifact": ARTIFACT_PATH,
                "registered_model": name,
                "version": int(version),
                "source": f"{run.info.artifact_uri}/{ARTIFACT_PATH}",
            }
        provenance = d["provenance"]["mlflow"]
        provenance |= {
            "search_run_id": parent.info.run_id if parent else None,
            "trial_run_id": trial_run.info.run_id if trial_run else None,
        }
        write_card(card)
        for f in dict.fromkeys((card.model_path.name, WEIGHTS_FILE, CARD_JSON, CARD_MD)):
            client.log_artifact(run_id, str(card.directory / f), artifact_path=ARTIFACT_PATH)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    if not provenance.get("reused_version"):
        log(f"registered {name} version {version} (MLflow run {run_id})")
    return provenance


def _log_figures(client, run_id: str, d: dict) -> None:
    """The card's figures as the export run's metrics, its choices as params."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    metrics = {
        f"{side}_{k}": d[side][k]
        for side in ("base", "compressed")
        for k in ("test_accuracy", "macs", "params", "file_bytes", "fps", "latency_ms")
    }
    metrics |= {
        "speedup": d["speedup"],
        "size_ratio": d["size_ratio"],
        "max_abs_diff": d["verification"]["max_abs_diff"],
        "top1_agreement": d["verification"]["top1_agreement"],
    }
    client.log_batch(
        run_id,
        metrics=[
            Metric(k, float(v), now, 0)
            for k, v in metrics.items()
            if isinstance(v, int | float) and math.isfinite(v)
        ],
        params=[
            Param(k, str(v))
            for k, v in (
                ("trial", d["trial"]),
                ("format", d["format"]),
                ("int8", d["int8"]),
                ("runtime", d["runtime"]["compressed"]),
                ("threads", d["runtime"]["threads"]),
                ("retrain_epochs", (d["retrain"] or {}).get("epochs", 0)),
            )
        ],
    )


def _register_export(tracker, card: Card, rec: TrialRecord, run_id: str) -> str:
    """A new version of the study's registered model from the export run's `export/` folder,
    tagged with the format, file, runtime and measured figures; returns the version."""
    from prunetune.search.tracking import registered_name

    d = card.data
    name = registered_name(d["study"])
    version = tracker.register(
        d["study"],
        rec,
        artifact=ARTIFACT_PATH,
        run_id=run_id,
        description=f"trial {rec.number} exported as {d['file']} "
        f"({d['runtime']['compressed']}); see card.md",
    )
    for key, value in (
        ("format", d["format"]),
        ("file", d["file"]),
        ("runtime", d["runtime"]["compressed"]),
        ("export_test_accuracy", d["compressed"]["test_accuracy"]),
        ("export_speedup", d["speedup"]),
    ):
        if value is not None:
            tracker.client.set_model_version_tag(
                name, version, key, f"{value:.6g}" if isinstance(value, float) else value
            )
    return version


def _reused(client, name: str, version: str, experiment_id: str, run_id: str, uri: str) -> dict:
    """Provenance of an export whose trial, format and runtime already have a model version: that
    version (its source, its run), and this export's run."""
    mv = client.get_model_version(name, version)
    return {
        "registered": True,
        "reused_version": True,
        "tracking_uri": uri,
        "experiment_id": experiment_id,
        "export_run_id": run_id,
        "artifact": ARTIFACT_PATH,
        "registered_model": name,
        "version": int(version),
        "source": mv.source,
    }


def _foreign_artifacts(uri: str, artifact_location: str) -> str | None:
    """The artifact folder of a SQLite-tracked experiment when it lies outside the database's
    folder (prunetune creates it inside): a copied study folder would still write into the
    original. None when it is inside, or not a local store."""
    location = urlparse(artifact_location)
    if not uri.startswith("sqlite:///") or location.scheme not in ("", "file"):
        return None
    folder = Path(unquote(location.path)).resolve()
    return (
        None
        if folder.is_relative_to(Path(uri.removeprefix("sqlite:///")).resolve().parent)
        else str(folder)
    )


def _not_registered(card: Card, why: str, log: Callable[[str], None]) -> dict:
    log(f"not registered in MLflow: {why}")
    provenance = {"registered": False, "why": why}
    card.data["provenance"]["mlflow"] = provenance
    write_card(card)
    return provenance


# ---------------------------------------------------------------------------------- rendering


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def card_markdown(d: dict) -> str:
    """The report card as Markdown (rendering only: every figure comes from `d`, card.json's data)."""
    b, c, rt, v = d["base"], d["compressed"], d["runtime"], d["verification"]
    rows = [
        ("runtime", b["runtime"], c["runtime"]),
        ("test accuracy", _pct(b["test_accuracy"]), _pct(c["test_accuracy"])),
        ("validation accuracy", _pct(b["val_accuracy"]), _pct(c["val_accuracy"])),
        ("MACs", f"{b['macs']:,}", f"{c['macs']:,}"),
        ("FLOPs (2 x MACs)", f"{b['flops']:,}", f"{c['flops']:,}"),
        ("params", f"{b['params']:,}", f"{c['params']:,}"),
        ("file size", f"{b['file_bytes']:,} B", f"{c['file_bytes']:,} B"),
        (
            "FPS (batch 1)",
            f"{b['fps']:,.0f} (IQR {b['fps_spread']:.0%})",
            f"{c['fps']:,.0f} (IQR {c['fps_spread']:.0%})",
        ),
        ("latency (ms)", f"{b['latency_ms']:.3f}", f"{c['latency_ms']:.3f}"),
    ]
    lines = [
        f"# prunetune report card: study `{d['study']}`, trial {d['trial']}",
        "",
        f"Selected by: {d['selection']}. Format: {d['format']}{' (int8)' if d['int8'] else ''}, "
        f"file `{d['file']}`; `prunetune.load_compressed(DIR)` loads `{WEIGHTS_FILE}` as a torch module.",
        "",
        "| | base | compressed |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {x} | {y} |" for name, x, y in rows]
    lines += [
        "",
        f"**Speedup {d['speedup']:.1f}x, file {d['size_ratio']:.1f}x smaller.** FPS: {rt['threads']} "
        f"thread(s), batch {rt['batch_size']}, {rt['protocol']} ({rt['repeats']} samples); base and "
        f"compressed measured side by side, each from its exported file (base on {b['runtime']}, "
        f"compressed on {c['runtime']}).",
        f"Quantized kernels in the graph that runs: {', '.join(rt['kernels']) or 'none (float)'}.",
    ]
    if rt["op_types"]:
        lines.append(
            f"All op types after ONNX Runtime's optimisations: {', '.join(rt['op_types'])}."
        )
    delta = "" if v["accuracy_delta"] is None else f" ({v['accuracy_delta'] * 100:+.2f} points)"
    lines += [
        "",
        "## Verification",
        "",
        f"- outputs vs the float PyTorch model: {verification_text(v, int8=d['int8'])}",
        f"- test accuracy through {c['runtime']}: {_pct(c['test_accuracy'])}{delta}; in PyTorch with the "
        f"search's quantization simulation: {_pct(c['test_accuracy_torch'])}; recorded during the search: "
        f"{_pct(d['recorded']['test_accuracy'])}",
        f"- during the search (FPS on {d['recorded']['runtime']}): speedup "
        f"{'-' if d['recorded']['speedup'] is None else format(d['recorded']['speedup'], '.1f') + 'x'}, "
        f"base test accuracy {_pct(d['recorded']['base_test_accuracy'])}",
    ]
    if d["retrain"]:
        r = d["retrain"]
        how = (
            f"on the full training split (lr {r['lr']:g}, "
            if r.get("lr") is not None
            else "with your train_fn ("
        )
        lines.append(
            f"- recovery fine-tune: {r['epochs']} more epoch(s) {how}{r['seconds']:.1f} s): validation "
            f"accuracy {_pct(r.get('val_accuracy_before'))} before, {_pct(r['val_accuracy'])} after"
        )
    lines += [
        "",
        "## Layers",
        "",
        "| layer | type | base channels | kept channels | weight bits | runs as |",
        "|---|---|---:|---:|---:|---|",
    ]
    lines += [
        f"| {x['layer']} | {x['type']} | {x['base_channels']} | {x['kept_channels']} | {x['bits']} | "
        f"{x['runs_as']} |"
        for x in d["layers"]
    ]
    lines += [
        "",
        "## Config",
        "",
        "```json",
        json.dumps(d["config"], indent=1),
        "```",
        "",
        "## Provenance",
        "",
        "```json",
        json.dumps(d["provenance"], indent=1, default=str),
        "```",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ loading


def load_compressed(
    directory: str | Path, *, model: str | None = None, base_model: nn.Module | None = None
) -> nn.Module:
    """The model of an export directory (or of a compressed.pt file) as a float torch module in eval
    mode, weight bit-widths baked in. `model`: the `package.module:function` of a user architecture
    (only then is that code imported); `base_model`: the in-memory model a Python API search
    compressed (`prunetune.run_search`; its files name no architecture). CheckpointError if DIR
    holds no readable compressed.pt, its file names user code other than `model`, or it needs a
    `base_model` that was not given."""
    path = Path(directory)
    model, _ = load_compressed_file(
        path / WEIGHTS_FILE if path.is_dir() else path, model=model, base_model=base_model
    )
    return materialize(model)
