"""The files of an export folder: their names, checking and preparing the folder (an earlier
prunetune export is replaced, anything else is never overwritten), writing the model file
(onnx | pt2 | int8 ONNX) and loading `compressed.pt` back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from prunetune.compress import load_compressed_file
from prunetune.errors import ConfigError, PrunetuneError
from prunetune.paths import check_writable_folder, probe_writable
from prunetune.runtimes import INT8_BITS, materialize, quantize_onnx_int8, to_onnx

FORMATS = ("onnx", "pt2", "state-dict")
WEIGHTS_FILE = "compressed.pt"
CARD_JSON, CARD_MD = "card.json", "card.md"
MODEL_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx", "pt2": "model.pt2"}
EXPORT_NAMES = (*MODEL_FILES.values(), WEIGHTS_FILE, CARD_JSON, CARD_MD)
PT2_MAX_BATCH = 4096


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


def write_model(
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
