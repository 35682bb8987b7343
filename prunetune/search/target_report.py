"""The `targets` strategy's report, computed from the full study alone (no torch): per target, the
best config found against the uniform and global-ranking baselines ("vs uniform": what the search
bought), and how well the proxy ranked the configs (Spearman within each target)."""
from __future__ import annotations

import math

import optuna

COMPLETE = optuna.trial.TrialState.COMPLETE


def target_rows(study: optuna.Study) -> list[dict]:
    """One row per target of a `targets` search, lightest first: {"target", "uniform", "global",
    "search" (best validation accuracy of each kind; None when none finished), "best" (the best
    of all), "best_trial", "vs_uniform" (best - uniform, in accuracy fractions)}; [] for a study of
    another strategy."""
    rows: dict[float, dict] = {}
    for t in study.get_trials(deepcopy=False):
        if "target" not in t.user_attrs or t.state != COMPLETE:
            continue
        accuracy = t.user_attrs.get("record", {}).get("metrics", {}).get("accuracy")
        if accuracy is None:
            continue
        row = rows.setdefault(float(t.user_attrs["target"]), {"uniform": None, "global": None, "search": None,
                                                               "best": None, "best_trial": None})
        kind = t.user_attrs.get("candidate", "search")
        row[kind] = accuracy if row.get(kind) is None else max(row[kind], accuracy)
        if row["best"] is None or accuracy > row["best"]:
            row["best"], row["best_trial"] = accuracy, t.number
    out = []
    for target in sorted(rows, reverse=True):
        row = rows[target]
        gain = None if row["uniform"] is None else row["best"] - row["uniform"]
        out.append({"target": target, **row, "vs_uniform": gain})
    return out


def proxy_quality(study: optuna.Study) -> dict[str, float] | None:
    """How well the proxy ranked the full trials of a `targets` search: {"proxy_spearman": mean
    within-target Spearman of proxy vs brief fine-tune accuracy, weighted by pairs,
    "proxy_pairs": pairs used}; None with fewer than 3 pairs at every target."""
    by_target: dict[float, list[tuple[float, float]]] = {}
    for t in study.get_trials(deepcopy=False):
        proxy = t.user_attrs.get("proxy")
        if t.state == optuna.trial.TrialState.COMPLETE and proxy is not None and "target" in t.user_attrs:
            accuracy = t.user_attrs.get("record", {}).get("metrics", {}).get("accuracy")
            if accuracy is not None:
                by_target.setdefault(float(t.user_attrs["target"]), []).append((float(proxy), float(accuracy)))
    weighted = [(spearman(pairs), len(pairs)) for pairs in by_target.values() if len(pairs) >= 3]
    weighted = [(rho, n) for rho, n in weighted if rho is not None]
    if not weighted:
        return None
    pairs = sum(n for _, n in weighted)
    return {"proxy_spearman": sum(rho * n for rho, n in weighted) / pairs, "proxy_pairs": float(pairs)}


def spearman(pairs: list[tuple[float, float]]) -> float | None:
    """Spearman's rank correlation of the pairs (average ranks for ties); None when a side is
    constant."""
    xs, ys = _ranks([p[0] for p in pairs]), _ranks([p[1] for p in pairs])
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    if sx == 0 or sy == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sx * sy)


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks
