"""Choosing the trial to export and finding its stored weights."""

from __future__ import annotations

from pathlib import Path

from prunetune.errors import ConfigError, PrunetuneError
from prunetune.search.records import COMPLETE, TrialRecord


def choose_trial(result, *, trial: int | None = None, select: str | None = None) -> TrialRecord:
    """The trial to export from a SearchResult: trial number `trial` (any complete trial), the front
    member chosen by the `select` rule, or else the knee of the front. PrunetuneError for an unknown
    or incomplete trial, or a study without a complete trial; ConfigError for a bad rule."""
    if trial is not None and select:
        raise ConfigError("give either a trial number or a selection rule, not both")
    if trial is not None:
        try:
            rec = result.record(trial)
        except KeyError:
            raise PrunetuneError(f"study {result.study_name!r} has no trial {trial}") from None
        if rec.state != COMPLETE:
            raise PrunetuneError(
                f"trial {trial} of study {result.study_name!r} is {rec.state}"
                f"{' (' + rec.reason + ')' if rec.reason else ''}; export a complete trial"
            )
        return rec
    from prunetune.search.results import selected

    chosen = selected(result, select)
    if chosen is None:
        raise PrunetuneError(f"study {result.study_name!r} has no complete trial to export")
    return chosen


def trial_weights(rec: TrialRecord, study: str, uri: str | None) -> Path:
    """The trial's weights file: where the search stored it, else (another machine, the search's
    folder gone) downloaded from the study's MLflow runs into this folder's
    mlruns/prunetune/<study>/weights/. PrunetuneError when neither has it."""
    if rec.weights and Path(rec.weights).is_file():
        return Path(rec.weights)
    if rec.weights:
        from prunetune.search.tracking import fetch_front_weights

        from prunetune.paths import weights_dir

        fetched = fetch_front_weights(uri, study, Path(rec.weights).name, weights_dir(study))
        if fetched is not None:
            return fetched
    raise PrunetuneError(
        f"the weights of trial {rec.number} were not kept (only the Pareto front's "
        f"are, unless the search ran with --keep-all-weights): export a front member"
    )
