"""The Pareto front as the parent run shows it: a table for mlflow.log_table and the run's
Markdown description (rendering only)."""

from __future__ import annotations

from prunetune.search.results import SearchResult


def front_table(result: SearchResult) -> dict[str, list]:
    """The front as columns for mlflow.log_table (the base model first): the parent run's
    Artifacts tab shows it as a sortable table, one row per member with its trial number."""
    from prunetune.search.results import table_rows

    rows = table_rows(result)
    cols = [
        "trial",
        "accuracy",
        "test_accuracy",
        "macs",
        "flops",
        "fps",
        "speedup",
        "size_bytes",
        "knee",
        "config",
    ]
    return {c: [r.get(c) if c != "trial" else str(r.get(c)) for r in rows] for c in cols}


def front_note(result: SearchResult, run_id: str) -> str:
    """The parent run's description (Markdown, shown first on the run's Overview): the front's PNG
    (served by the tracking server's get-artifact endpoint) and its table, base model first."""
    from prunetune import render
    from prunetune.search.results import table_rows

    cols = ["trial", "accuracy", "test_accuracy", "macs", "fps", "speedup", "size_bytes", "config"]
    rows = table_rows(result)
    for row in rows:
        row["trial"] = f"{row['trial']}*" if row.get("knee") else str(row["trial"])
    lines = [
        f"**Pareto front: {len(result.front)} trials** (* = knee, the default export; "
        "filter the runs with `tags.pareto = 'true'`)",
        "",
        f"![Pareto front](get-artifact?path=pareto_front.png&run_uuid={run_id})",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for row in rows:
        cells = [
            row[c] if isinstance(row.get(c), str) else render.FORMATS.get(c, str)(row.get(c))
            for c in cols
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", render.FPS_NOTE]
    if result.hypervolume:
        from prunetune.search.pareto import UNIT_HV_NOTE

        lines.append(f"Hypervolume {result.hypervolume[-1]:.3f} on [0, 1] ({UNIT_HV_NOTE}).")
    return "\n".join(lines)[:60000]
