"""The search as a user runs it: pick the runner, attach tracking and progress, print and save the
Pareto table. `prunetune search` and `prunetune pareto` are thin wrappers over these."""

from __future__ import annotations

import json

from prunetune import render
from prunetune.config import SearchSettings
from prunetune.paths import study_dir
from prunetune.redact import mask_url
from prunetune.search import pareto
from prunetune.search.objectives import OBJECTIVES
from prunetune.search.results import (
    SearchResult,
    csv_text,
    front_rows,
    max_drop,
    near_chance_pick,
    selected,
    summarize,
    table_rows,
    write_front,
)
from prunetune.search.selection import parse_rule
from prunetune.search.study import check_storage, load_existing
from prunetune.search.target_report import targets_text

TABLE_COLS = [
    "trial",
    "accuracy",
    "test_accuracy",
    "macs",
    "fps",
    "speedup",
    "params",
    "size_bytes",
    "config",
]
HEADERS = {"accuracy": "val acc", "test_accuracy": "test acc", "size_bytes": "size"}


class ProgressBar:
    """tqdm on stderr: trials finished of the budget, current front size, ETA (and with --timeout
    the time left of this run's window). Where stderr is not
    a terminal (logs, CI), one plain line per finished trial instead."""

    def __init__(self, timeout: float | None = None) -> None:
        self.bar = None
        self.last = -1
        self.timeout = timeout  # --timeout: the time left is shown, counted from the first call
        self.started: float | None = None

    def time_left(self) -> str | None:
        """ "M:SS" of the --timeout window still left (None without a timeout)."""
        import time

        if self.timeout is None:
            return None
        if self.started is None:
            self.started = time.monotonic()
        left = max(0.0, self.timeout - (time.monotonic() - self.started))
        return f"{int(left // 60)}:{int(left % 60):02d}"

    def __call__(self, finished: int, total: int, study) -> None:
        import sys

        from tqdm import tqdm

        left = self.time_left()
        if not sys.stderr.isatty():
            if finished != self.last:
                self.last = finished
                if finished:
                    print(
                        (
                            f"search: {finished}/{total} trials finished, "
                            f"front {len(summarize(study).front)}"
                        )
                        + (f", {left} left" if left else ""),
                        file=sys.stderr,
                        flush=True,
                    )
            return
        if self.bar is None:
            # disable=None: a bar on a terminal, silent in logs and pipes
            self.bar = tqdm(
                total=total,
                initial=finished,
                unit="trial",
                desc="search",
                dynamic_ncols=True,
                disable=None,
            )
        else:
            self.bar.update(finished - self.bar.n)
        if finished or left:
            extra = {"left": left} if left else {}
            self.bar.set_postfix(front=len(summarize(study).front), **extra, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


CHANCE_MARGIN = 0.15  # near chance: below 1/k + max(0.05, CHANCE_MARGIN x (1 - 1/k)) for k classes


def near_chance(accuracy: float, num_classes: int) -> str | None:
    """The one-line warning for a base model whose validation accuracy is near chance (1/k for k
    classes): below chance + max(5 points, 15 % of the way from chance to 100 %), e.g. 23.5 % for
    10 classes, 57.5 % for 2; None otherwise."""
    chance = 1.0 / num_classes
    limit = chance + max(0.05, CHANCE_MARGIN * (1.0 - chance))
    if accuracy >= limit:
        return None
    return (
        f"warning: the base model's validation accuracy is {accuracy:.1%}, near chance "
        f"({chance:.1%} for {num_classes} classes; warned below {limit:.1%}): its compressed "
        "versions will be no better. Train it longer (--base-epochs) or pass a trained model "
        "(--checkpoint FILE)."
    )


class BaseModelCheck:
    """A SearchListener that logs `near_chance`'s warning when the search starts (before the first
    trial); silent otherwise."""

    def __init__(self, log) -> None:
        self.log = log

    def on_search_start(self, setup, study) -> None:
        acc = setup.base_metrics.get("accuracy")
        classes = setup.workload.num_classes
        warning = near_chance(acc, classes) if acc is not None and classes else None
        if warning:
            self.log(warning)

    def on_trial_end(self, record, study) -> None:
        pass

    def on_search_end(self, result, study, *, outcome: str) -> None:
        pass


def run(
    cfg: SearchSettings, *, log=lambda m: None, progress=None, listeners=(), setup=None
) -> SearchResult:
    """Run the search on the configured backend (`setup`: one already prepared, e.g. the Python
    API's around the caller's loop; else the runner prepares the CLI's)."""
    if cfg.runner.backend == "ray":
        from prunetune.search.ray_runner import run_search_ray

        return run_search_ray(
            cfg, listeners=list(listeners), log=log, progress=progress, setup=setup
        )
    from prunetune.search.optuna_runner import run_search

    return run_search(cfg, listeners=list(listeners), log=log, progress=progress, setup=setup)


def pareto_text(result: SearchResult) -> str:
    """The Pareto table with the base model first and a note on what the numbers mean; rows whose
    FPS was measured under load by other processes are marked '!' and a note says so."""
    rows = table_rows(result)
    for row in rows:
        marks = ("*" if row.get("pick") else "") + ("k" if row.get("knee") else "")
        marks += "!" if row.get("under_load") else ""
        row["trial"] = f"{row['trial']}{marks}"
    counts = result.counts()
    context = result.base_context
    notes = [
        f"Pareto front of study {result.study_name!r}: {len(result.front)} of "
        f"{counts.get('complete', 0)} complete trials ({counts.get('failed', 0)} failed, "
        f"{counts.get('rejected', 0)} rejected); objectives: {', '.join(result.objectives)}.",
        render.table(rows, TABLE_COLS, headers=HEADERS),
        "* default pick (export, registry): the fewest MACs within "
        f"{max_drop(result) * 100:.1f} point(s) of the base's validation accuracy (--max-drop), "
        "else the knee; k: knee point. Selection used validation accuracy; test accuracy is on the "
        "held-out test split.",
        f"FPS: batch 1, {context.get('threads', 1)} thread(s), "
        f"runtime {context.get('runtime', 'torch')}, median; "
        f"{render.FPS_NOTE} Accuracy on small splits is noisy "
        "(about +-1.3 points on 500 validation images).",
    ]
    loaded = [row for row in rows if row["under_load"]]
    if loaded:
        loads = ", ".join(f"{row['load_1m']:.1f}" for row in loaded if row["load_1m"] is not None)
        notes.append(render.LOAD_NOTE.format(loads=loads or "-", cpus=context.get("cpus", "?")))
    if result.hypervolume:
        notes.append(f"hypervolume {result.hypervolume[-1]:.3f} on [0, 1] ({pareto.UNIT_HV_NOTE})")
    return "\n".join(notes)


def check_names(cfg: SearchSettings) -> None:
    """Fail fast, before anything is written, on names that do not exist."""
    from prunetune.compress import IMPORTANCES
    from prunetune.data import DATASETS
    from prunetune.models.factory import validate_model_name
    from prunetune.runtimes import check_runtime

    validate_model_name(cfg.task.model)
    DATASETS.get(cfg.task.dataset)
    # metric:direction objectives are the Python API's (its eval_fn's metrics)
    for o in cfg.selection.objectives:
        if o not in OBJECTIVES:
            from prunetune.errors import UnknownNameError

            raise UnknownNameError("objective", o, list(OBJECTIVES))
    for imp in cfg.space_spec.importance:
        IMPORTANCES.get(imp)
    check_runtime(cfg.measurement.runtime)
    if cfg.selection.select:
        check_rule_metrics(parse_rule(cfg.selection.select))
    from prunetune.paths import check_home, prepare_sqlite
    from prunetune.search.tracking import requested_uri

    study_dir(cfg.study_name)  # the name is valid and its folder stays under mlruns/prunetune

    check_storage(cfg.stores.storage_url)  # a supported, writable Optuna storage (or a new one)
    check_home()  # caches and locks: a file or an unwritable folder fails now, not after training
    prepare_sqlite(requested_uri(cfg.stores.tracking_uri), "tracking", create=False)


def threads_warning(threads: int) -> str | None:
    """The one-line warning for --threads above the CPU cores this process may use (FPS would be
    measured oversubscribed: slower and noisier than on a machine that has them); None otherwise."""
    import os

    affinity = getattr(os, "sched_getaffinity", None)
    cores = len(affinity(0)) if affinity else os.cpu_count() or 1
    if threads <= cores:
        return None
    return (
        f"warning: --threads {threads} is more than the {cores} CPU core(s) this process may "
        f"use: "
        "FPS is measured oversubscribed (slower and noisier than on a machine with that many "
        "cores)"
    )


def check_rule_metrics(rule) -> None:
    """ConfigError unless every metric a selection rule names is one that trials record (checked
    before any trial: a typo must not cost the whole budget)."""
    from prunetune.errors import ConfigError
    from prunetune.search.records import METRIC_KEYS

    unknown = sorted({rule.metric, *(c.metric for c in rule.conditions)} - set(METRIC_KEYS))
    if unknown:
        raise ConfigError(
            f"rule {str(rule)!r}: unknown metric {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(METRIC_KEYS))}"
        )


def selection_warning(result: SearchResult, select: str | None) -> str | None:
    """A one-line warning when `select` picks no member of the front (then nothing is selected
    or registered, and export needs another rule or --trial); None when it picks one."""
    from prunetune.errors import ConfigError

    if not select:
        return None
    try:
        selected(result, select)
    except ConfigError as exc:
        return f"warning: --select picks nothing, so no model was selected or registered: {exc}"
    return None


def search_and_report(
    cfg: SearchSettings,
    *,
    log=print,
    out=print,
    export_dir: str | None = None,
    retrain_epochs: int = 0,
) -> SearchResult:
    """Run the search with a progress bar and MLflow tracking; print and save the Pareto table;
    with `export_dir`, export the selected model (after `retrain_epochs` of recovery fine-tune)."""
    from prunetune.search.tracking import MlflowTracker, check_store, experiment_url

    check_names(cfg)
    for warning in filter(None, [threads_warning(cfg.measurement.threads)]):
        log(warning)
    check_store(
        cfg.stores.tracking_uri
    )  # an unreachable or broken store fails here, before any write
    if export_dir:  # an --export folder that cannot take the export fails now, not after the search
        from prunetune.export import check_output

        check_output(export_dir)
    bar = ProgressBar(cfg.budget.timeout)
    # with --export the export registers the selected trial (one version per trial, not two)
    tracker = MlflowTracker(
        cfg.stores.tracking_uri, select=cfg.selection.select, register=not export_dir
    )
    try:
        result = run(cfg, log=log, progress=bar, listeners=[BaseModelCheck(log), tracker])
    finally:
        bar.close()
    out(pareto_report(cfg.study_name, storage=cfg.stores.storage_url))
    paths = write_front(result, study_dir(cfg.study_name))
    out(
        f"saved: {paths['csv']} and {paths['json']}; MLflow run {tracker.parent_run_id} "
        "(`prunetune ui`, then "
        f"{experiment_url('http://127.0.0.1:5000', tracker.experiment_id, tracker.parent_run_id)})"
    )
    for warning in (selection_warning(result, cfg.selection.select), near_chance_pick(result)):
        if warning:
            log(warning)
    if export_dir:
        from prunetune.export import export_model

        card = export_model(
            cfg.study_name,
            storage=cfg.stores.storage_url,
            out_dir=export_dir,
            select=cfg.selection.select,
            tracking_uri=cfg.stores.tracking_uri,
            retrain_epochs=retrain_epochs,
            log=log,
        )
        out(card.summary())
    return result


def resolve_study(name: str | None, storage: str) -> str:
    """The study `pareto` / `export` read: `name` when given, else the only study in `storage`,
    else the one `prunetune search` uses by default (mnist_net-mnist5k) if it is there.
    PrunetuneError naming the studies otherwise, or when a SQLite storage does not exist (nothing
    is created). A given name is checked (prunetune.names)."""
    if name is not None:
        from prunetune.names import check_study_name

        return check_study_name(name)
    import optuna

    from prunetune.errors import PrunetuneError
    from prunetune.search.study import make_storage

    opened = make_storage(storage, create=False)  # nothing created: PrunetuneError when missing
    summaries = optuna.get_all_study_summaries(opened, include_best_trial=False)
    names = sorted(
        s.study_name for s in summaries if "screen_of" not in s.user_attrs
    )  # a search's screening study is not one to read
    default = SearchSettings().study_name
    if len(names) == 1:
        return names[0]
    if default in names:
        return default
    raise PrunetuneError(
        f"which study? {mask_url(storage)} holds "
        f"{', '.join(names) if names else 'none'}: pass --study NAME"
    )


def pareto_report(study_name: str, *, storage: str, fmt: str = "table") -> str:
    """The front of an existing study as a table, CSV or JSON (ConfigError for an invalid name)."""
    from prunetune.names import check_study_name

    study = load_existing(storage, check_study_name(study_name))
    result = summarize(study)
    if fmt == "json":
        return json.dumps(front_rows(result), indent=2)
    if fmt == "csv":
        return csv_text(result).rstrip("\n")
    report = targets_text(study)
    return pareto_text(result) + (f"\n{report}" if report else "")
