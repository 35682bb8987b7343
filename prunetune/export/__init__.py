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

The package, one job per module: `choice` (which trial, its weights), `files` (the folder and its
files), `verify` (the file in its runtime vs PyTorch), `timing` (next to the base), `layers`,
`card` (the typed card), `assemble` (its data computed), `markdown` (rendered), `report` (written),
`verified` (one trial written, verified and timed), `mlflow_log` (run and model version),
`study` (a CLI study's export, `export_model`).
"""

from __future__ import annotations

from prunetune.export.card import CardData
from prunetune.export.choice import trial_weights
from prunetune.export.files import (
    CARD_JSON,
    CARD_MD,
    FORMATS,
    WEIGHTS_FILE,
    check_output,
    load_compressed,
)
from prunetune.export.markdown import verification_text
from prunetune.export.report import Card
from prunetune.export.study import export_model

__all__ = [
    "CARD_JSON",
    "CARD_MD",
    "FORMATS",
    "WEIGHTS_FILE",
    "Card",
    "CardData",
    "check_output",
    "export_model",
    "load_compressed",
    "trial_weights",
    "verification_text",
]
