"""Pareto plots (rendering only): accuracy vs FLOPs and accuracy vs FPS, the front highlighted and
the base model marked; a Plotly HTML (interactive, works offline) and a matplotlib PNG."""
from __future__ import annotations

from pathlib import Path

from prunetune.search.records import COMPLETE
from prunetune.search.results import SearchResult

PANELS = (("flops", "FLOPs (2 x MACs, log)"), ("fps", "FPS, batch 1 (log)"))


def _series(result: SearchResult, key: str) -> dict[str, tuple[list, list, list]]:
    front = set(result.front)
    out = {"trials": ([], [], []), "front": ([], [], [])}
    for r in result.records:
        if r.state != COMPLETE or key not in r.metrics:
            continue
        xs, ys, labels = out["front" if r.number in front else "trials"]
        xs.append(r.metrics[key])
        ys.append(100 * r.metrics["accuracy"])
        labels.append(f"trial {r.number}")
    return out


def pareto_png(result: SearchResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (key, label) in zip(axes, PANELS):
        s = _series(result, key)
        ax.scatter(s["trials"][0], s["trials"][1], s=14, c="#9aa5b1", label="trials")
        fx, fy, _ = s["front"]
        order = sorted(range(len(fx)), key=lambda i: fx[i])
        ax.plot([fx[i] for i in order], [fy[i] for i in order], "o-", c="#d62728", ms=5, label="Pareto front")
        if result.knee is not None:
            k = result.record(result.knee)
            ax.scatter([k.metrics[key]], [100 * k.metrics["accuracy"]], s=120, facecolors="none",
                       edgecolors="k", label=f"knee (trial {k.number})")
        b = result.base_metrics
        if b.get(key) and b.get("accuracy") is not None:
            ax.scatter([b[key]], [100 * b["accuracy"]], marker="*", s=180, c="#1f77b4", label="base model")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"prunetune study {result.study_name}: {len(result.front)} front members")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pareto_html(result: SearchResult, path: Path) -> Path:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=[label for _, label in PANELS])
    for col, (key, label) in enumerate(PANELS, start=1):
        s = _series(result, key)
        fig.add_trace(go.Scatter(x=s["trials"][0], y=s["trials"][1], text=s["trials"][2], mode="markers",
                                 name="trials", marker={"color": "#9aa5b1"}, showlegend=col == 1), 1, col)
        fx, fy, ft = s["front"]
        order = sorted(range(len(fx)), key=lambda i: fx[i])
        fig.add_trace(go.Scatter(x=[fx[i] for i in order], y=[fy[i] for i in order],
                                 text=[ft[i] for i in order], mode="lines+markers", name="Pareto front",
                                 marker={"color": "#d62728"}, showlegend=col == 1), 1, col)
        b = result.base_metrics
        if b.get(key) and b.get("accuracy") is not None:
            fig.add_trace(go.Scatter(x=[b[key]], y=[100 * b["accuracy"]], mode="markers", name="base model",
                                     marker={"symbol": "star", "size": 14, "color": "#1f77b4"},
                                     showlegend=col == 1), 1, col)
        fig.update_xaxes(type="log", title_text=label, row=1, col=col)
        fig.update_yaxes(title_text="validation accuracy (%)", row=1, col=col)
    fig.update_layout(title=f"prunetune study {result.study_name}", height=480)
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path
