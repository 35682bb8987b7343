"""From an Optuna study to a search result: records, the Pareto front, hypervolume, the knee, the
front members' test accuracy, and the rows of the Pareto table. Compute only; rendering is
elsewhere.

Everything here reads the study's storage, so `prunetune pareto` works on a finished, an
interrupted or a still-running search, from any process.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from prunetune.search import pareto, selection
from prunetune.search.objectives import OBJECTIVES, get_objective
from prunetune.search.records import (
    COMPLETE,
    METRIC_KEYS,
    TrialRecord,
    is_context,
    record_from_trial,
)
from prunetune.search.target_refine import near_chance_below

if TYPE_CHECKING:
    import pandas

DEFAULT_MAX_DROP = 0.01  # the default pick: the cheapest front member within 1 point of the base
TIMING_ORDER = ("compress_s", "finetune_s", "measure_s", "total_s")
TABLE_COLUMNS = (
    "trial",
    "accuracy",
    "test_accuracy",
    "macs",
    "flops",
    "fps",
    "speedup",
    "params",
    "size_bytes",
    "bitops",
)


@dataclass
class SearchResult:
    """A study's state: all records, the front (trial numbers, selection on validation accuracy).
    `records` are as stored; the front members' test accuracy lives once, in `test_accuracy` (by
    trial number): `metrics_of` gives a trial's metrics with it, as every report shows them. The
    base model's reference is kept apart from the conditions it was measured under:
    `base_metrics` (measured, and a Python API search's user metrics), `base_context` (runtime,
    threads, device, the machine's load: records.CONTEXT_KEYS)."""

    study_name: str
    objectives: list[str]
    base_metrics: dict
    records: list[TrialRecord]
    front: list[int]
    knee: int | None
    hypervolume: list[float] = field(default_factory=list)
    test_accuracy: dict[int, float] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    constraints: dict = field(default_factory=dict)
    pick: int | None = None
    num_classes: int | None = None
    base_context: dict = field(default_factory=dict)

    def record(self, number: int) -> TrialRecord:
        for r in self.records:
            if r.number == number:
                return r
        raise KeyError(number)

    def front_records(self) -> list[TrialRecord]:
        return [self.record(n) for n in self.front]

    def metrics_of(self, record: TrialRecord) -> dict:
        """A trial's metrics as reported (tables, JSON, the data frame, selection rules): a copy of
        its record's metrics with its test accuracy where it was scored on the test split."""
        test = self.test_accuracy.get(record.number)
        return {**record.metrics, **({"test_accuracy": test} if test is not None else {})}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[r.state] = out.get(r.state, 0) + 1
        return out


def feasible(r: TrialRecord, constraints: dict) -> bool:
    """A complete trial that meets --min-accuracy and --max-flops."""
    if r.state != COMPLETE:
        return False
    acc, flops = constraints.get("min_accuracy"), constraints.get("max_flops")
    if acc is not None and r.metrics.get("accuracy", 0.0) < acc:
        return False
    return not (flops is not None and r.metrics.get("flops", 0) > flops)


def base_metrics_and_context(attrs: dict) -> tuple[dict, dict]:
    """(metrics, context) of the base model from a study's user attrs: its "base_metrics" hold
    both, the run context (records.is_context) beside the measured and user metrics."""
    stored = dict(attrs.get("base_metrics", {}))
    metrics = {k: v for k, v in stored.items() if not is_context(k)}
    return metrics, {k: v for k, v in stored.items() if is_context(k)}


def summarize(study: optuna.Study) -> SearchResult:
    """Records, front, knee and hypervolume history of a study created by prunetune."""
    attrs = study.user_attrs
    objectives = list(attrs.get("objectives", []))
    base, base_context = base_metrics_and_context(attrs)
    constraints = dict(attrs.get("constraints", {}))
    records = sorted(
        (record_from_trial(t) for t in study.get_trials(deepcopy=False)), key=lambda r: r.number
    )
    candidates = [r for r in records if feasible(r, constraints)]
    points = [r.metrics for r in candidates]
    front_idx = pareto.non_dominated(points, objectives)
    front = [candidates[i].number for i in front_idx]
    knee = None
    if front_idx:
        k = pareto.knee_point([points[i] for i in front_idx], objectives)
        knee = front[k]
    history = pareto.unit_hypervolume_history(points, objectives, base) if base and points else []
    tests = {int(k): float(v) for k, v in attrs.get("test_accuracy", {}).items()}
    config = dict(attrs.get("config", {}))
    result = SearchResult(
        study_name=study.study_name,
        objectives=objectives,
        base_metrics=base,
        records=records,
        front=front,
        knee=knee,
        hypervolume=history,
        test_accuracy=tests,
        config=config,
        constraints=constraints,
        num_classes=attrs.get("num_classes"),
        base_context=base_context,
    )
    result.pick = default_pick(result)
    return result


def max_drop(result: SearchResult) -> float:
    """The accuracy drop from the base that the default pick accepts (the study's --max-drop)."""
    return float(result.config.get("max_drop", DEFAULT_MAX_DROP))


def default_pick(result: SearchResult) -> int | None:
    """The front member a user would deploy: the cheapest (fewest MACs) whose validation accuracy
    is within `max_drop` of the base's; the knee when none is (or the base's accuracy is
    unknown); None for an empty front."""
    base = result.base_metrics.get("accuracy")
    if base is None or not result.front:
        return result.knee
    within = [
        r
        for r in result.front_records()
        if r.metrics.get("accuracy", 0.0) >= base - max_drop(result) - 1e-12
    ]
    if not within:
        return result.knee
    return min(
        within, key=lambda r: (r.metrics.get("macs", float("inf")), -r.metrics["accuracy"])
    ).number


def near_chance_pick(result: SearchResult) -> str | None:
    """A one-line warning when the default pick scores near chance (below a quarter of the way
    from chance to the base's accuracy): the brief fine-tune could not rank that front; None else
    (also when the number of classes is unknown)."""
    num_classes = result.num_classes
    if result.pick is None or not num_classes:
        return None
    base = result.base_metrics.get("accuracy")
    accuracy = result.record(result.pick).metrics.get("accuracy")
    chance = 1.0 / num_classes
    if base is None or accuracy is None or accuracy >= near_chance_below(base, num_classes):
        return None
    return (
        f"warning: the default pick, trial {result.pick}, scores {accuracy:.1%} on validation, "
        f"near chance ({chance:.0%}) against the base's {base:.1%}: no front member was within "
        "--max-drop of the base, and the brief fine-tune is too short to rank these configs "
        "(try more --epochs or --subset, or --distill)"
    )


def selected(result: SearchResult, select: str | None = None) -> TrialRecord | None:
    """The front member the selection rule `select` picks, else the default pick (`default_pick`);
    None for an empty front. ConfigError for a malformed rule or one no front member meets (see
    selection.select)."""
    if not result.front:
        return None
    if select:
        front = result.front_records()
        points = [result.metrics_of(r) for r in front]
        return front[selection.select(points, selection.parse_rule(select))]
    return result.record(result.pick if result.pick is not None else result.knee)


def scaled_fps(metrics: dict, base_fps: float | None) -> float | None:
    """A trial's FPS on the study's one clock: speedup (timed side by side with the base) x the
    base's FPS; the trial's own measured FPS when either is missing."""
    speedup = metrics.get("speedup")
    return speedup * base_fps if speedup and base_fps else metrics.get("fps")


def user_metric_keys(result: SearchResult) -> list[str]:
    """The metrics of the study's objectives that are not standard columns (a Python API search's
    own metrics, e.g. "map" of objective "map:maximize")."""
    keys = [get_objective(o).key for o in result.objectives]
    return [k for k in keys if k not in TABLE_COLUMNS and k not in OBJECTIVES]


def front_rows(result: SearchResult) -> list[dict]:
    """One dict per front member (sorted by accuracy, best first): the `prunetune pareto` JSON.
    `fps` is rescaled to one clock (render.FPS_NOTE): speedup x the base's FPS from the study's
    base measurement; `fps_measured` is the trial's own FPS, timed in its window."""
    rows = []
    base_fps = result.base_metrics.get("fps")
    extra = user_metric_keys(result)
    for r in result.front_records():
        metrics = result.metrics_of(r)
        row = {
            "trial": r.number,
            **{k: metrics.get(k) for k in (*TABLE_COLUMNS, *extra) if k != "trial"},
        }
        row["fps_measured"] = r.metrics.get("fps")
        row["fps"] = scaled_fps(r.metrics, base_fps)
        row["knee"] = r.number == result.knee
        row["pick"] = r.number == result.pick
        row["load_1m"] = r.context.get("load_1m")
        row["under_load"] = measured_under_load(result, r.context)
        row["config"] = {
            "ratios": r.config.get("ratios", {}),
            "bits": r.config.get("bits", {}),
            "importance": r.config.get("importance"),
        }
        rows.append(row)
    return sorted(rows, key=lambda x: (-(x["accuracy"] or 0.0), x["trial"]))


def table_rows(result: SearchResult) -> list[dict]:
    """The Pareto table: the base model first, then the front (config summarised as text)."""
    base = {
        "trial": "base",
        **{k: result.base_metrics.get(k) for k in TABLE_COLUMNS if k != "trial"},
        "knee": False,
        "pick": False,
        "config": "uncompressed",
        "load_1m": result.base_context.get("load_1m"),
        "under_load": measured_under_load(result, result.base_context),
    }
    rows = [base]
    for row in front_rows(result):
        rows.append({**row, "config": config_text(row["config"])})
    return rows


def measured_under_load(result: SearchResult, load: dict) -> bool:
    """Whether the FPS measurement whose measure.machine_load() reading `load` holds (a record's
    context, the base's) ran on a busy machine: the tasks runnable besides it plus its own
    threads (the study's FPS threads) were more than the CPUs; without a runnable count (not
    Linux), the 1-minute load average above the CPUs. False without a reading (older studies).
    The 1-minute average alone would also count this user's own training of the last minute,
    which the quiet lock pauses for the measurement."""
    if "cpus" not in load:
        return False
    if load.get("runnable") is not None:
        return load["runnable"] + int(result.base_context.get("threads") or 1) > load["cpus"]
    return load.get("load_1m", 0.0) > load["cpus"]


def config_text(config: dict) -> str:
    """Compact text of a config: kept ratios per group and the distinct bit-widths."""
    ratios = config.get("ratios", {})
    bits = config.get("bits", {})
    r = " ".join(f"{v:.2f}" for v in ratios.values()) if ratios else "-"
    b = "/".join(str(x) for x in sorted(set(bits.values()), reverse=True)) if bits else "32"
    return f"ratios[{r}] bits[{b}]"


def write_front(result: SearchResult, directory: Path) -> dict[str, Path]:
    """pareto_front.csv / .json of the front (base model first in the CSV)."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = front_rows(result)
    paths = {"json": directory / "pareto_front.json", "csv": directory / "pareto_front.csv"}
    paths["json"].write_text(json.dumps(rows, indent=2))
    paths["csv"].write_text(csv_text(result))
    return paths


def csv_text(result: SearchResult) -> str:
    rows = table_rows(result)
    buf = io.StringIO()
    cols = [
        "trial",
        "accuracy",
        *user_metric_keys(result),
        "test_accuracy",
        "macs",
        "flops",
        "fps",
        "speedup",
        "params",
        "size_bytes",
        "bitops",
        "knee",
        "config",
    ]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def trials_dataframe(result: SearchResult) -> pandas.DataFrame:
    """Every trial as one row of a pandas DataFrame, in trial-number order, after Optuna's
    `study.trials_dataframe()`: `number`, `state` (prunetune's: complete, failed, rejected,
    running, interrupted, waiting), `params_<name>` for each sampled parameter, one column per
    metric any record has (METRIC_KEYS first, then the others, user-defined ones included, by
    name; NaN where a trial lacks it; test accuracy only for front members that were scored), the
    timings in seconds (`total_s` is the trial's duration), `front` and `knee` (booleans: on the
    result's Pareto front, its knee) and `reason` (why a trial failed or was rejected, else "").
    A metric named like one of the fixed columns gets the prefix `metric_`."""
    import pandas

    reported = {r.number: result.metrics_of(r) for r in result.records}
    metrics = _ordered({k for m in reported.values() for k in m}, METRIC_KEYS)
    timings = _ordered({k for r in result.records for k in r.timings}, TIMING_ORDER)
    params = sorted({k for r in result.records for k in r.params})
    fixed = {
        "number",
        "state",
        "front",
        "knee",
        "reason",
        *timings,
        *(f"params_{k}" for k in params),
    }
    named = {m: f"metric_{m}" if m in fixed else m for m in metrics}
    front = set(result.front)
    rows = [
        {
            "number": r.number,
            "state": r.state,
            **{f"params_{k}": r.params.get(k) for k in params},
            **{named[m]: reported[r.number].get(m) for m in metrics},
            **{t: r.timings.get(t) for t in timings},
            "front": r.number in front,
            "knee": r.number == result.knee,
            "reason": r.reason,
        }
        for r in result.records
    ]
    columns = [
        "number",
        "state",
        *(f"params_{k}" for k in params),
        *named.values(),
        *timings,
        "front",
        "knee",
        "reason",
    ]
    return pandas.DataFrame.from_records(rows, columns=columns)


def _ordered(keys: set[str], first: tuple[str, ...]) -> list[str]:
    """`keys` with those in `first` leading, in its order, the rest sorted."""
    return [k for k in first if k in keys] + sorted(keys - set(first))
