"""Rendering at the edge: plain-text tables and number formats for the CLI (no computation)."""

from __future__ import annotations

import json


FPS_NOTE = (
    "speedup: the trial's model timed side by side with the base (interleaved samples, same "
    "window); fps = speedup x the base's FPS from the study's start, so every row is on one clock."
)
LOAD_NOTE = (
    "! measured while other processes kept every CPU busy (load at measurement: {loads}; "
    "{cpus} CPUs): the absolute FPS of these rows are low and noisy; their speedup, "
    "timed side by side with the base in the same window, is the figure to trust."
)


def human(n: float | int | None, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    if n is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}{unit}"
    return f"{n:.4g}{unit}" if isinstance(n, float) else f"{n}{unit}"


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


FORMATS = {
    "accuracy": fmt_pct,
    "test_accuracy": fmt_pct,
    "macs": human,
    "flops": human,
    "bitops": human,
    "params": human,
    "size_bytes": lambda v: human(v, "B"),
    "fps": lambda v: "-" if v is None else f"{v:,.0f}",
    "speedup": lambda v: "-" if v is None else f"{v:.1f}x",
    "macs_share": fmt_pct,
}


def table(rows: list[dict], columns: list[str], *, headers: dict[str, str] | None = None) -> str:
    """A left/right-aligned text table; known metrics get human formats."""
    headers = headers or {}
    cells = [[headers.get(c, c) for c in columns]]
    for row in rows:
        cells.append(
            [
                FORMATS.get(c, _plain)(row.get(c)) if not isinstance(row.get(c), str) else row[c]
                for c in columns
            ]
        )
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = []
    for k, r in enumerate(cells):
        lines.append(
            "  ".join(
                v.ljust(w) if i == len(columns) - 1 or not _numeric(v) and k > 0 else v.rjust(w)
                for i, (v, w) in enumerate(zip(r, widths))
            ).rstrip()
        )
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _numeric(s: str) -> bool:
    return bool(s) and (s[0].isdigit() or s[0] in "-.") and s != "-"


def _plain(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict | list):
        return json.dumps(v)
    return str(v)


def to_json(data) -> str:
    return json.dumps(data, indent=2, default=str)
