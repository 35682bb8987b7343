"""The report card rendered: card.md (`card_markdown`), the terminal paragraph (`card_summary`) and
the verification in words. Rendering only: every figure comes from the typed card."""

from __future__ import annotations

import json
from pathlib import Path

from prunetune.export.card import CardData, Verification
from prunetune.export.files import WEIGHTS_FILE
from prunetune.export.verify import INT8_MIN_AGREEMENT


def pct(x: float | None) -> str:
    """A fraction as a percentage with two decimals, "-" when unknown."""
    return "-" if x is None else f"{x:.2%}"


def verification_text(v: Verification, *, int8: bool) -> str:
    """The verification in words, with the criterion that applies: float exports must equal the
    PyTorch model's outputs within a float tolerance; int8 ones must agree on the top-1 class for
    >= INT8_MIN_AGREEMENT of the images (their logits differ by int8 rounding, so a raw |diff| of
    a few units is expected and reported relative to the logits' range)."""
    verdict = "pass" if v.outputs_match else "FAIL"
    if int8:
        rng = v.output_range
        rel = f", {v.max_abs_diff / rng:.1%} of the logits' range {rng:.3g}" if rng else ""
        return (
            f"int8 check {verdict}: top-1 agreement with the float model {v.top1_agreement:.2%} of "
            f"{v.images} {v.inputs} (needs >= {INT8_MIN_AGREEMENT:.0%}); logits differ by up to "
            f"{v.max_abs_diff:.3g} (int8 rounding{rel})"
        )
    return (
        f"float check {verdict}: outputs equal to PyTorch's within {v.tolerance:.1e} (max |diff| "
        f"{v.max_abs_diff:.1e}) on {v.images} {v.inputs}, top-1 agreement "
        f"{v.top1_agreement:.2%}"
    )


def card_summary(d: CardData, model_path: Path) -> str:
    """One paragraph for the terminal."""
    c, b = d.compressed, d.base
    return (
        f"exported trial {d.trial} of study {d.study} to {model_path} "
        f"({d.format}{', int8' if d.int8 else ''}): test accuracy {pct(c.test_accuracy)} "
        f"(base {pct(b.test_accuracy)}), {c.file_bytes / 1e6:.2f} MB "
        f"({d.size_ratio:.1f}x smaller), {c.fps:,.0f} FPS ({d.speedup:.1f}x the base; "
        f"{c.runtime} vs {b.runtime}, {d.runtime.threads} thread(s)); "
        f"verified: {verification_text(d.verification, int8=d.int8)}"
    )


def _figures(d: CardData) -> list[str]:
    """The base vs compressed table and how its FPS were measured."""
    b, c, rt = d.base, d.compressed, d.runtime
    rows = [
        ("runtime", b.runtime, c.runtime),
        ("test accuracy", pct(b.test_accuracy), pct(c.test_accuracy)),
        ("validation accuracy", pct(b.val_accuracy), pct(c.val_accuracy)),
        ("MACs", f"{b.macs:,}", f"{c.macs:,}"),
        ("FLOPs (2 x MACs)", f"{b.flops:,}", f"{c.flops:,}"),
        ("params", f"{b.params:,}", f"{c.params:,}"),
        ("file size", f"{b.file_bytes:,} B", f"{c.file_bytes:,} B"),
        (
            "FPS (batch 1)",
            f"{b.fps:,.0f} (IQR {b.fps_spread:.0%})",
            f"{c.fps:,.0f} (IQR {c.fps_spread:.0%})",
        ),
        ("latency (ms)", f"{b.latency_ms:.3f}", f"{c.latency_ms:.3f}"),
    ]
    lines = ["| | base | compressed |", "|---|---:|---:|"]
    lines += [f"| {name} | {x} | {y} |" for name, x, y in rows]
    lines += [
        "",
        f"**Speedup {d.speedup:.1f}x, file {d.size_ratio:.1f}x smaller.** FPS: {rt.threads} "
        f"thread(s), batch {rt.batch_size}, {rt.protocol} ({rt.repeats} samples); base and "
        f"compressed measured side by side, each from its exported file (base on {b.runtime}, "
        f"compressed on {c.runtime}).",
        f"Quantized kernels in the graph that runs: {', '.join(rt.kernels) or 'none (float)'}.",
    ]
    if rt.op_types:
        lines.append(f"All op types after ONNX Runtime's optimisations: {', '.join(rt.op_types)}.")
    return lines


def _retrain_line(r: dict) -> str:
    how = (
        f"on the full training split (lr {r['lr']:g}, "
        if r.get("lr") is not None
        else "with your train_fn ("
    )
    return (
        f"- recovery fine-tune: {r['epochs']} more epoch(s) {how}{r['seconds']:.1f} s): validation "
        f"accuracy {pct(r.get('val_accuracy_before'))} before, {pct(r['val_accuracy'])} after"
    )


def _verification(d: CardData) -> list[str]:
    """The Verification section: outputs, accuracy through the file, the search's figures."""
    v, c, rec = d.verification, d.compressed, d.recorded
    delta = "" if v.accuracy_delta is None else f" ({v.accuracy_delta * 100:+.2f} points)"
    speedup = "-" if rec.speedup is None else format(rec.speedup, ".1f") + "x"
    lines = [
        "## Verification",
        "",
        f"- outputs vs the float PyTorch model: {verification_text(v, int8=d.int8)}",
        f"- test accuracy through {c.runtime}: {pct(c.test_accuracy)}{delta}; in PyTorch with the "
        f"search's quantization simulation: {pct(c.test_accuracy_torch)}; "
        f"recorded during the search: {pct(rec.test_accuracy)}",
        f"- during the search (FPS on {rec.runtime}): speedup "
        f"{speedup}, "
        f"base test accuracy {pct(rec.base_test_accuracy)}",
    ]
    return lines + ([_retrain_line(d.retrain)] if d.retrain else [])


def _layers(d: CardData) -> list[str]:
    lines = [
        "## Layers",
        "",
        "| layer | type | base channels | kept channels | weight bits | runs as |",
        "|---|---|---:|---:|---:|---|",
    ]
    return lines + [
        f"| {x.layer} | {x.type} | {x.base_channels} | {x.kept_channels} | {x.bits} | {x.runs_as} |"
        for x in d.layers
    ]


def _json_block(title: str, value: object, **dump) -> list[str]:
    return [f"## {title}", "", "```json", json.dumps(value, indent=1, **dump), "```"]


def card_markdown(d: CardData) -> str:
    """The report card as Markdown (card.md)."""
    lines = [
        f"# prunetune report card: study `{d.study}`, trial {d.trial}",
        "",
        f"Selected by: {d.selection}. Format: {d.format}{' (int8)' if d.int8 else ''}, "
        f"file `{d.file}`; `prunetune.load_compressed(DIR)` loads `{WEIGHTS_FILE}` "
        "as a torch module.",
        "",
    ]
    for section in (
        _figures(d),
        _verification(d),
        _layers(d),
        _json_block("Config", d.config),
        _json_block("Provenance", d.to_json()["provenance"], default=str),
    ):
        lines += [*section, ""]
    return "\n".join(lines)
