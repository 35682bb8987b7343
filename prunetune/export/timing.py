"""Timing of an exported file next to the base model exported the same way (interleaved, in each
file's own runtime: `runtimes.measure_fps`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prunetune.compress import CompressionConfig, save_compressed
from prunetune.export.files import WEIGHTS_FILE, write_model
from prunetune.export.inputs import ExportInputs
from prunetune.export.verify import file_runner
from prunetune.measure import Timing
from prunetune.runtimes import Runner, materialize, measure_fps


def time_next_to_base(
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
            else write_model(materialize(inputs.base), fmt, inputs.example, folder)
        )
        base_run = file_runner(path, fmt, run.threads, load=inputs.load)
        timings = measure_fps(
            {"compressed": run, "base": base_run}, inputs.example, repeats=repeats
        )
        return base_run, path.stat().st_size, timings
