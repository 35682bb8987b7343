"""Pareto plots (rendering only): accuracy vs FLOPs and accuracy vs FPS, the front highlighted and
the base model marked, every front member labelled with its trial number: a matplotlib PNG, and an
HTML page (the same figure as inline SVG plus the front as a table: no scripts, so it renders
inside MLflow's artifact viewer, which loads HTML into a sandboxed iframe and showed the 4.6 MB
self-contained Plotly page blank).

The front is non-dominated over all the study's objectives, so in one panel (a 2-D projection)
some front members lie below others: every front member is drawn as a marker, and the line joins
only the members that are also non-dominated in that panel's two metrics (no zig-zag).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prunetune.search import pareto
from prunetune.search.records import COMPLETE
from prunetune.search.results import SearchResult, scaled_fps

PANELS = (("flops", "FLOPs (2 x MACs, log)"), ("fps", "FPS, batch 1: speedup x base FPS (log)"))


@dataclass
class Series:
    """One panel's points: x = the panel's metric, y = validation accuracy in %,
    label = 'trial N'."""

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
        m = _shown(r.metrics, key, result.base_metrics)
        target = members if r.number in front else trials
        target.add(m[key], 100 * m["accuracy"], f"trial {r.number}")
        if r.number in front:
            rows.append((r.number, m))
    envelope = Series()
    flat = pareto.non_dominated([m for _, m in rows], ["accuracy", key])
    for i in sorted(flat, key=lambda i: rows[i][1][key]):
        envelope.add(rows[i][1][key], 100 * rows[i][1]["accuracy"], f"trial {rows[i][0]}")
    return trials, members, envelope


def _shown(metrics: dict, key: str, base: dict) -> dict:
    """The metrics a panel plots: FPS on the study's one clock (results.scaled_fps), as the
    table."""
    if key != "fps":
        return metrics
    return {**metrics, "fps": scaled_fps(metrics, base.get("fps"))}


def _title(result: SearchResult) -> str:
    return (
        f"prunetune study {result.study_name}: {len(result.front)} front members "
        f"(non-dominated in {', '.join(result.objectives)})"
    )


def _figure(result: SearchResult):
    """The two panels as a matplotlib figure (caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, (key, label) in zip(axes, PANELS):
        trials, members, envelope = _panel(result, key)
        ax.scatter(trials.x, trials.y, s=14, c="#9aa5b1", label="other trials")
        ax.plot(envelope.x, envelope.y, "-", c="#d62728", lw=1.2, label="front in this plane")
        ax.scatter(
            members.x, members.y, s=28, c="#d62728", zorder=3, label="Pareto front (trial number)"
        )
        for x, y, text in zip(members.x, members.y, members.labels):
            ax.annotate(
                text.removeprefix("trial "),
                (x, y),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=8,
                color="#8b1a1a",
                zorder=5,
            )
        if result.knee is not None and key in result.record(result.knee).metrics:
            k = result.record(result.knee)
            m = _shown(k.metrics, key, result.base_metrics)
            ax.scatter(
                [m[key]],
                [100 * m["accuracy"]],
                s=130,
                facecolors="none",
                edgecolors="k",
                zorder=4,
                label=f"knee (trial {k.number})",
            )
        b = result.base_metrics
        if b.get(key) and b.get("accuracy") is not None:
            ax.scatter(
                [b[key]], [100 * b["accuracy"]], marker="*", s=180, c="#1f77b4", label="base model"
            )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(
            matplotlib.ticker.NullFormatter()
        )  # minor labels overlap on short ranges
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(_title(result))
    fig.tight_layout()
    return fig


def pareto_png(result: SearchResult, path: Path) -> Path:
    """Write the two panels as a PNG to `path`; returns `path`."""
    import matplotlib.pyplot as plt

    fig = _figure(result)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pareto_html(result: SearchResult, path: Path) -> Path:
    """Write the figure as inline SVG (text kept as text) and the front as an HTML table, in one
    self-contained page without scripts or external resources; returns `path`."""
    import html
    import io

    import matplotlib.pyplot as plt

    from prunetune import render
    from prunetune.search.results import table_rows

    fig = _figure(result)
    buf = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :].replace('width="792pt"', 'width="100%"', 1)
    cols = ["trial", "accuracy", "test_accuracy", "macs", "fps", "speedup", "size_bytes", "config"]
    rows = table_rows(result)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row, c))}</td>" for c in cols) + "</tr>"
        for row in rows
    )
    path.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(_title(result))}</title>\n"
        "<style>body{font-family:sans-serif;margin:8px}"
        "table{border-collapse:collapse;font-size:13px}\n"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "svg{max-width:1100px;height:auto}</style>\n"
        f"</head><body>{svg}<h3>Pareto front (base model first; * = knee)</h3>"
        f"<table><tr>{head}</tr>{body}</table>\n"
        f"<p>{html.escape(render.FPS_NOTE)}</p></body></html>"
    )
    return path


def _cell(row: dict, col: str) -> str:
    """A table cell as the CLI prints it (the knee's trial starred)."""
    from prunetune import render

    v = row.get(col)
    if col == "trial":
        return f"{v}*" if row.get("knee") else str(v)
    if isinstance(v, str):
        return v
    return render.FORMATS.get(col, lambda x: "-" if x is None else str(x))(v)
