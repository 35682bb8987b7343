"""The `targets` strategy's report, computed from the full study alone (no torch): per target, the
best config found against the uniform and global-ranking baselines ("vs uniform": what the search
bought), and how well the proxy ranked the configs (Spearman within each target)."""

from __future__ import annotations

import math

import optuna

from prunetune.search.target_refine import REFINED_KEY

COMPLETE = optuna.trial.TrialState.COMPLETE
WEAK_PROXY = 0.6  # proxy Spearman below this: the ranking is not to be trusted (said, logged)


def candidate_study_name(study_name: str, target: float) -> str:
    """The name of the study holding the candidates scored at `target` of study `study_name`."""
    return f"{study_name}.target-{target:g}"


def baseline_proxy_key(kind: str, target: float) -> str:
    """The full study's user attr holding the proxy score of baseline `kind` at `target` (scored
    in the target's candidate study, so its full trial never waits for it)."""
    return f"proxy.{kind}.t{target:g}"


def proxy_of(trial: optuna.trial.FrozenTrial, study_attrs: dict) -> float | None:
    """The proxy score of a full trial of a `targets` search: its own `proxy` (a searched
    candidate), or its baseline's score kept in the study's user attrs `study_attrs`; None when
    not (yet) scored."""
    if trial.user_attrs.get("proxy") is not None:
        return float(trial.user_attrs["proxy"])
    kind, target = trial.user_attrs.get("candidate"), trial.user_attrs.get("target")
    if kind is None or target is None:
        return None
    return study_attrs.get(baseline_proxy_key(kind, float(target)))


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
        row = rows.setdefault(
            float(t.user_attrs["target"]),
            {"uniform": None, "global": None, "search": None, "best": None, "best_trial": None},
        )
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


def target_metrics(study: optuna.Study) -> dict[str, float]:
    """The MLflow parent run's metrics of a `targets` search: per target `best.t<target>`,
    `uniform.t<target>` and `vs_uniform.t<target>` (accuracy fractions), and the proxy's
    `proxy_spearman` / `proxy_pairs`; {} for another strategy."""
    out: dict[str, float] = {}
    for row in target_rows(study):
        suffix = f"t{row['target']:g}"
        for key in ("best", "uniform", "global", "vs_uniform"):
            if row[key] is not None:
                out[f"{key}.{suffix}"] = float(row[key])
    return out | (proxy_quality(study) or {})


def targets_text(study: optuna.Study) -> str | None:
    """The per-target table printed after a `targets` search (None for another strategy): the
    best config found at each MACs target against the baselines, and the proxy's rank quality."""
    rows = target_rows(study)
    if not rows:
        return None

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    added = {float(t) for t in study.user_attrs.get(REFINED_KEY, [])}

    lines = [
        "target (MACs of base)  uniform  global  searched  best (trial)  vs uniform",
        "---------------------  -------  ------  --------  ------------  ----------",
    ]
    for r in rows:
        gain = "-" if r["vs_uniform"] is None else f"{r['vs_uniform'] * 100:+.1f} pt"
        best = f"{pct(r['best'])} ({r['best_trial']})"
        target = f"{'(added) ' if r['target'] in added else ''}{r['target']:.2%}"
        lines.append(
            f"{target:>21}  {pct(r['uniform']):>7}  {pct(r['global']):>6}  "
            f"{pct(r['search']):>8}  {best:>12}  {gain:>10}"
        )
    quality = proxy_quality(study)
    if quality is None:
        lines.append(
            "proxy rank quality: too few configs per target to measure yet "
            "(needs 3 full trials at a target)"
        )
    else:
        rho = quality["proxy_spearman"]
        weak = " -- WEAK: the proxy's ranking of candidates cannot be trusted; raise --proxy-steps"
        verdict = "" if rho >= WEAK_PROXY else weak
        lines.append(
            f"proxy rank quality: Spearman {rho:.2f} between proxy and brief fine-tune accuracy "
            f"within targets, over {quality['proxy_pairs']:.0f} configs{verdict}"
        )
    lines.append(
        "validation accuracy after the brief fine-tune; every config at a target has its MACs "
        "within 2 % below it"
        + ("; (added): a target added where the front dropped steeply." if added else ".")
    )
    return "\n".join(lines)


def proxy_quality(study: optuna.Study) -> dict[str, float] | None:
    """How well the proxy ranked the full trials of a `targets` search: {"proxy_spearman": mean
    within-target Spearman of proxy vs brief fine-tune accuracy, weighted by pairs,
    "proxy_pairs": pairs used}; None with fewer than 3 pairs at every target."""
    by_target: dict[float, list[tuple[float, float]]] = {}
    study_attrs = study.user_attrs
    for t in study.get_trials(deepcopy=False):
        proxy = proxy_of(t, study_attrs)
        if (
            t.state == optuna.trial.TrialState.COMPLETE
            and proxy is not None
            and "target" in t.user_attrs
        ):
            accuracy = t.user_attrs.get("record", {}).get("metrics", {}).get("accuracy")
            if accuracy is not None:
                by_target.setdefault(float(t.user_attrs["target"]), []).append(
                    (float(proxy), float(accuracy))
                )
    weighted = [(spearman(pairs), len(pairs)) for pairs in by_target.values() if len(pairs) >= 3]
    weighted = [(rho, n) for rho, n in weighted if rho is not None]
    if not weighted:
        return None
    pairs = sum(n for _, n in weighted)
    return {
        "proxy_spearman": sum(rho * n for rho, n in weighted) / pairs,
        "proxy_pairs": float(pairs),
    }


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
