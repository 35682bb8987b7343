"""Layer sensitivity scan (Li et al. 2017): prune each group alone at several ratios and measure
validation accuracy without fine-tuning. The result can narrow a search space: each group's
largest ratio is the highest one whose accuracy drop stayed within a budget."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from prunetune.compress import prune
from prunetune.data import DataBundle
from prunetune.measure import count_macs
from prunetune.models import evaluate
from prunetune.spaces import SearchSpace


def scan(
    model: nn.Module,
    bundle: DataBundle,
    groups: list[str],
    ratios: list[float],
    *,
    importance: str = "l2",
    base_accuracy: float | None = None,
) -> list[dict]:
    """Rows {group, ratio, accuracy, drop, macs}: each group pruned alone, no fine-tuning."""
    example = bundle.example_input(1)
    base_acc = (
        base_accuracy if base_accuracy is not None else evaluate(model, bundle.val)["accuracy"]
    )
    rows = []
    for g in groups:
        for r in ratios:
            pruned = prune(model, {g: r}, example, importance=importance)
            acc = evaluate(pruned, bundle.val)["accuracy"]
            rows.append(
                {
                    "group": g,
                    "ratio": r,
                    "accuracy": acc,
                    "drop": base_acc - acc,
                    "macs": count_macs(pruned, example),
                }
            )
    return rows


def narrow(space: SearchSpace, rows: list[dict], *, max_drop: float) -> SearchSpace:
    """A copy of `space` whose groups' upper ratio is the largest scanned ratio with an accuracy
    drop <= max_drop (at least the space's lower bound)."""
    data = space.to_dict()
    for g, spec in data["groups"].items():
        ok = [r["ratio"] for r in rows if r["group"] == g and r["drop"] <= max_drop]
        spec["ratio"] = [
            spec["ratio"][0],
            max([spec["ratio"][0], *[min(x, spec["ratio"][1]) for x in ok]]),
        ]
    return SearchSpace.from_dict(data)


def plot(rows: list[dict], path: Path, *, title: str) -> Path:
    """Accuracy vs ratio, one line per group (rendering only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for g in dict.fromkeys(r["group"] for r in rows):
        pts = [(r["ratio"], 100 * r["accuracy"]) for r in rows if r["group"] == g]
        ax.plot(*zip(*pts), "o-", label=g, ms=4)
    ax.set_xlabel("fraction of the group's channels removed (no fine-tuning)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
