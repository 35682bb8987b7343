"""Pareto plots (rendering only): accuracy vs FLOPs and accuracy vs FPS, the front highlighted and
the base model marked; a Plotly HTML (interactive, works offline) and a matplotlib PNG.

The front is non-dominated over all the study's objectives, so in one panel (a 2-D projection)
some front members lie below others: every front member is drawn as a marker, and the line joins
only the members that are also non-dominated in that panel's two metrics (no zig-zag).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prunetune.search import pareto
from prunetune.search.records import COMPLETE
from prunetune.search.results import SearchResult

PANELS = (("flops", "FLOPs (2 x MACs, log)"), ("fps", "FPS, batch 1 (log)"))


@dataclass
class Series:
    """One panel's points: x = the panel's metric, y = validation accuracy in %, label = 'trial N'."""

    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def add(self, x: float, y: float, label: str) -> None:
        self.x.append(x)
        self.y.append(y)
        self.labels.append(label)


def _panel(result: SearchResult, key: str) -> tuple[Series, Series, Series]:
    """(other complete trials, front members, front members non-dominated in (accuracy, key)
    sorted by key) for the panel of metric `key`."""
    front = set(result.front)
    trials, members, rows = Series(), Series(), []
    for r in result.records:
        if r.state != COMPLETE or key not in r.metrics:
            continue
        target = members if r.number in front else trials
        target.add(r.metrics[key], 100 * r.metrics["accuracy"], f"trial {r.number}")
        if r.number in front:
            rows.append(r)
    envelope = Series()
    flat = pareto.non_dominated([r.metrics for r in rows], ["accuracy", key])
    for i in sorted(flat, key=lambda i: rows[i].metrics[key]):
        envelope.add(rows[i].metrics[key], 100 * rows[i].metrics["accuracy"], f"trial {rows[i].number}")
    return trials, members, envelope


def _title(result: SearchResult) -> str:
    return (f"prunetune study {result.study_name}: {len(result.front)} front members "
            f"(non-dominated in {', '.join(result.objectives)})")


def pareto_png(result: SearchResult, path: Path) -> Path:
    """Write the two panels as a PNG to `path`; returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, (key, label) in zip(axes, PANELS):
        trials, members, envelope = _panel(result, key)
        ax.scatter(trials.x, trials.y, s=14, c="#9aa5b1", label="other trials")
        ax.plot(envelope.x, envelope.y, "-", c="#d62728", lw=1.2, label="front in this plane")
        ax.scatter(members.x, members.y, s=28, c="#d62728", zorder=3, label="Pareto front")
        if result.knee is not None:
            k = result.record(result.knee)
            ax.scatter([k.metrics[key]], [100 * k.metrics["accuracy"]], s=130, facecolors="none",
                       edgecolors="k", zorder=4, label=f"knee (trial {k.number})")
        b = result.base_metrics
        if b.get(key) and b.get("accuracy") is not None:
            ax.scatter([b[key]], [100 * b["accuracy"]], marker="*", s=180, c="#1f77b4", label="base model")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(_title(result))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pareto_html(result: SearchResult, path: Path) -> Path:
    """Write the two panels as a self-contained Plotly HTML (plotly.js inline: opens offline and in
    the MLflow UI's artifact viewer); returns `path`."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=[label for _, label in PANELS])
    for col, (key, label) in enumerate(PANELS, start=1):
        trials, members, envelope = _panel(result, key)
        first = col == 1
        fig.add_trace(go.Scatter(x=trials.x, y=trials.y, text=trials.labels, mode="markers",
                                 name="other trials", marker={"color": "#9aa5b1"}, showlegend=first), 1, col)
        fig.add_trace(go.Scatter(x=envelope.x, y=envelope.y, text=envelope.labels, mode="lines",
                                 name="front in this plane", line={"color": "#d62728"}, showlegend=first), 1, col)
        fig.add_trace(go.Scatter(x=members.x, y=members.y, text=members.labels, mode="markers",
                                 name="Pareto front", marker={"color": "#d62728", "size": 8},
                                 showlegend=first), 1, col)
        b = result.base_metrics
        if b.get(key) and b.get("accuracy") is not None:
            fig.add_trace(go.Scatter(x=[b[key]], y=[100 * b["accuracy"]], mode="markers", name="base model",
                                     marker={"symbol": "star", "size": 14, "color": "#1f77b4"},
                                     showlegend=first), 1, col)
        fig.update_xaxes(type="log", title_text=label, row=1, col=col)
        fig.update_yaxes(title_text="validation accuracy (%)", row=1, col=col)
    fig.update_layout(title=_title(result), height=480)
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path
