"""Opening a study: storage, sampler, the one-space-per-study rule, warm start, and recovery of
trials that an interrupted run left unfinished."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable

import optuna

from prunetune.config import SearchSettings
from prunetune.errors import ConfigError, PrunetuneError
from prunetune.paths import check_sqlite_file, file_lock, prepare_sqlite
from prunetune.redact import mask_config, mask_url, scrub
from prunetune.search.db_lock import advisory_lock, is_postgres
from prunetune.search.objectives import get_objective
from prunetune.search.study_store import load, storage_of, study_exists
from prunetune.spaces import SearchSpace
from prunetune.stores import (
    absolute_sqlite,
    check_kind,
    check_scheme,
    check_writable_file,
    sqlite_path,
)

TERMINAL = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


def make_storage(url: str, *, create: bool = True) -> optuna.storages.BaseStorage:
    """RDB storage, checked first (see check_storage); with `create` (a search) a new SQLite
    storage's folder is created. Without it (`pareto`, `export`: read-only commands) nothing is
    created: a missing or empty storage is a PrunetuneError."""
    url = check_storage(url, create=create)
    # Optuna creates a new database's tables without a guard: two processes opening the same
    # new storage at once can both insert its schema version (IntegrityError). One at a time.
    if create:
        prepare_sqlite(url, "study storage", create=True)  # the folder of a new SQLite storage
    with _file_lock(url, "", "storage"):
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs={"connect_args": {"timeout": 60}}
                if url.startswith("sqlite")
                else None,
            )
        except Exception as exc:
            why = scrub(str(exc).splitlines()[0][:200] if str(exc) else "", url)
            raise PrunetuneError(
                f"cannot open study storage {mask_url(url)!r}: {type(exc).__name__}: {why}"
            ) from None


def check_storage(url: str, *, create: bool = True) -> str:
    """The absolute URL of the study storage `url` after checking, writing nothing, that it is a
    supported persistent database (no file:, no in-memory SQLite), that a SQLite file is a SQLite
    database in a writable folder and itself writable, and that an existing database is an
    Optuna storage (not MLflow's, not another application's). Without `create`, it must exist
    and hold Optuna's tables. PrunetuneError, one line, otherwise."""
    check_scheme(url, "optuna")
    if create:
        url = prepare_sqlite(url, "study storage", create=False)
        path = sqlite_path(url)
        if path is not None:
            check_writable_file(path, "study storage file")
    else:
        url = absolute_sqlite(url)
        path = sqlite_path(url)
        if path is not None and not path.is_file():
            raise PrunetuneError(
                f"no study storage at {str(path)!r}: run `prunetune search` "
                f"first, "
                "or pass --storage"
            )
        if path is not None:
            check_sqlite_file(path, "study storage")
    if not check_kind(url, "optuna") and not create:
        raise PrunetuneError(
            f"study storage {mask_url(url)!r} holds no study yet: run `prunetune "
            "search` first, or pass --storage"
        )
    return url


def make_sampler(cfg: SearchSettings, space=None) -> optuna.samplers.BaseSampler:
    """The sampler named by cfg.plan.sampler, seeded; populations sized to the budget. A space
    that brings its own (a sweep's grid: Space.sampler) gets that instead."""
    own = space.sampler(cfg.plan.seed) if space is not None else None
    if own is not None:
        return own
    pop = max(8, min(50, cfg.budget.trials // 4))
    if cfg.plan.sampler == "tpe":
        return optuna.samplers.TPESampler(
            seed=cfg.plan.seed, multivariate=True, n_startup_trials=10
        )
    if cfg.plan.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=cfg.plan.seed, population_size=pop)
    if cfg.plan.sampler == "nsga3":
        return optuna.samplers.NSGAIIISampler(seed=cfg.plan.seed, population_size=pop)
    if cfg.plan.sampler == "gp":
        return optuna.samplers.GPSampler(seed=cfg.plan.seed)
    return optuna.samplers.RandomSampler(seed=cfg.plan.seed)


def lock_name(storage_url: str, study: str, purpose: str) -> str:
    """The lock file name of (storage, study, purpose): a hash, so that two stores holding a study
    of the same name never share a lock and any name is a safe file name."""
    digest = hashlib.sha256(f"{storage_url}\0{study}".encode()).hexdigest()[:24]
    return f"{digest}.{purpose}"


def _file_lock(storage_url: str, study: str, purpose: str):
    """An exclusive lock of (storage, study, purpose) on this machine (see paths.file_lock)."""
    return file_lock(lock_name(storage_url, study, purpose))


def storage_url(study: optuna.Study) -> str:
    """The URL of the RDB storage a study lives in ("" for other storages)."""
    return str(getattr(storage_of(study), "url", ""))


def budget_lock(study: optuna.Study):
    """Held while counting trials and asking for a new one, so that several searches sharing a
    study stop exactly at the budget: in the database for PostgreSQL (drivers on several machines,
    see db_lock), else a file lock (searches on one machine)."""
    url = storage_url(study)
    if is_postgres(url):
        return advisory_lock(url, url, study.study_name, "budget")
    return _file_lock(url, study.study_name, "budget")


def load_existing(cfg_storage: str, name: str) -> optuna.Study:
    """An existing study, or a clear error listing the studies in that storage."""
    storage = make_storage(cfg_storage, create=False)  # read-only commands never create a store
    names = [
        s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
    ]
    if name not in names:
        raise PrunetuneError(
            f"no study {name!r} in {mask_url(cfg_storage)}; studies there: "
            f"{', '.join(names) if names else 'none'}"
        )
    return load(storage, name)


def open_study(
    cfg: SearchSettings,
    space: SearchSpace,
    base_metrics: dict,
    *,
    log: Callable[[str], None] = lambda m: None,
) -> optuna.Study:
    """Create the study (with warm-start trials) or load it for resuming. A study keeps one space
    and one set of objectives: reusing its name with others is refused. A resume with another
    recipe is recorded (see record_recipe) and logged in one line."""
    objectives = [get_objective(o) for o in cfg.selection.objectives]
    storage = make_storage(cfg.stores.storage_url)
    with _file_lock(storage.url, cfg.study_name, "create"):
        exists = study_exists(storage, cfg.study_name)
        study = load(
            storage,
            cfg.study_name,
            sampler=make_sampler(cfg, space),
            directions=[o.direction for o in objectives],
        )
        if exists:
            _check_same(study, cfg, space)
            note = record_recipe(study, cfg)
            if note:
                log(note)
        else:
            study.set_user_attr("objectives", [o.name for o in objectives])
            study.set_user_attr("strategy", cfg.plan.strategy)
            study.set_user_attr("space_fingerprint", space.fingerprint())
            study.set_user_attr("space", space.to_dict())
            study.set_user_attr("config", mask_config(cfg.to_stored()))  # no password stored
            study.set_user_attr("base_metrics", base_metrics)
            study.set_user_attr(
                "constraints",
                {"min_accuracy": cfg.selection.min_accuracy, "max_flops": cfg.selection.max_flops},
            )
            study.set_user_attr("model", cfg.task.model)
            study.set_user_attr("dataset", cfg.task.dataset)
            for params in space.warm_start():
                enqueue(study, params, skip_if_exists=True)
    return study


def _check_same(study: optuna.Study, cfg: SearchSettings, space: SearchSpace) -> None:
    attrs = study.user_attrs
    if attrs.get("screen_of"):
        raise ConfigError(
            f"study {cfg.study_name!r} is the screening study of {attrs['screen_of']!r}; "
            f"use another --study name"
        )
    if attrs.get("space_fingerprint") != space.fingerprint():
        raise ConfigError(
            f"study {cfg.study_name!r} was created with a different search space "
            f"(model {attrs.get('model')!r}, dataset {attrs.get('dataset')!r}); "
            f"use another --study name, or the original space to resume it"
        )
    if attrs.get("strategy", "search") != cfg.plan.strategy:
        raise ConfigError(
            f"study {cfg.study_name!r} was created with --strategy "
            f"{attrs.get('strategy', 'search')}, not {cfg.plan.strategy}; use another --study name"
        )
    if attrs.get("objectives") != list(cfg.selection.objectives):
        raise ConfigError(
            f"study {cfg.study_name!r} optimises {attrs.get('objectives')}, not "
            f"{list(cfg.selection.objectives)}; use another --study name"
        )


ENQUEUED = "enqueued_params"


def enqueue(
    study: optuna.Study, params: dict, *, skip_if_exists: bool = False, **user_attrs
) -> None:
    """Enqueue a trial of `params` with `user_attrs`; the params are also kept as its user attr
    `enqueued_params` (see `params_of`: Optuna keeps a waiting trial's params private)."""
    study.enqueue_trial(
        params, user_attrs={**user_attrs, ENQUEUED: params}, skip_if_exists=skip_if_exists
    )


def params_of(trial: optuna.trial.FrozenTrial) -> dict:
    """The trial's params: sampled, or those it was enqueued with while it has none yet."""
    return trial.params or trial.user_attrs.get(ENQUEUED, {})


# what a trial's numbers depend on: a resume must keep them (the budget, timeout, sampler,
# screening, backend, workers, where stores and data live, the device, --select and
# --keep-all-weights may change: they decide which trials run, not what a trial measures)
RECIPE_KEYS = (
    "model",
    "dataset",
    "checkpoint",
    "base_epochs",
    "base_lr",
    "base_batch_size",
    "base_seed",
    "seed",
    "subset",
    "epochs",
    "lr",
    "lr_scaling",
    "batch_size",
    "distill",
    "runtime",
    "threads",
    "fps_repeats",
    "min_accuracy",
    "max_flops",
)
# recipe keys added after studies were first stored: the value a study stored without one ran with
RECIPE_BEFORE_KEY = {"lr_scaling": 0.0}


def record_recipe(study: optuna.Study, cfg: SearchSettings) -> str | None:
    """On a resume whose recipe (RECIPE_KEYS) differs from the stored config: store the new config
    as the study's "config" and append {"from_trial", "changed": {key: [old, new]}} to its
    "config_history" (trials numbered from_trial on ran with it); return the one-line warning
    naming the keys. None (nothing written) when the recipe is the same."""
    stored, now = study.user_attrs.get("config") or {}, mask_config(cfg.to_stored())
    before = (RECIPE_BEFORE_KEY if stored else {}) | stored
    changed = {k: [before[k], now[k]] for k in RECIPE_KEYS if k in before and before[k] != now[k]}
    if not changed:
        return None
    first = len(study.get_trials(deepcopy=False))
    history = list(study.user_attrs.get("config_history", []))
    study.set_user_attr("config_history", [*history, {"from_trial": first, "changed": changed}])
    study.set_user_attr("config", now)
    shown = ", ".join(f"{k} {old!r:.40} -> {new!r:.40}" for k, (old, new) in changed.items())
    return (
        f"warning: resuming study {cfg.study_name!r} with another recipe ({shown}): trials "
        f"from "
        f"number {first} on use it; recorded in the study's config_history"
    )


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def dead_local(worker: str | None) -> bool:
    if not worker:
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def recover_unfinished(study: optuna.Study) -> list[int]:
    """Re-queue trials an interrupted run left unfinished: RUNNING trials whose process on this
    machine is gone (kill -9) or that no process ever tagged as its own (killed between ask and
    tag: runners ask and tag under the budget lock, which is held here too), and trials failed by
    Ctrl-C. Each is re-queued once with its params and its original number as `replay_of` (so it
    uses the same seed). Returns their numbers."""
    with budget_lock(study):
        return requeue_unfinished(study)


def requeue_unfinished(study: optuna.Study) -> list[int]:
    """recover_unfinished's work, for a caller already holding the study's budget lock: the
    runners call it before every ask, so a trial whose process died while this search runs (a
    second search on the study, killed) is failed, its budget freed and it is re-run."""
    requeued = set(study.user_attrs.get("requeued", []))
    storage = storage_of(study, required=True)
    study_id = storage.get_study_id_from_name(study.study_name)
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.number in requeued:
            continue
        worker = t.user_attrs.get("worker")
        if t.state == optuna.trial.TrialState.RUNNING and (not worker or dead_local(worker)):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            storage.set_trial_user_attr(trial_id, "interrupted", True)
            storage.set_trial_user_attr(trial_id, "fail_reason", "its process died (killed?)")
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        elif not (t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("interrupted")):
            continue
        origin = t.user_attrs.get("replay_of", t.number)
        enqueue(study, t.params, replay_of=origin)
        out.append(t.number)
    if out:
        study.set_user_attr("requeued", sorted(requeued | set(out)))
    return out


def others_running_here(study: optuna.Study) -> bool:
    """Whether a trial of another process on this machine is RUNNING: its end (or its process's
    death, see requeue_unfinished) decides whether the budget is reached."""
    me, host = worker_id(), socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker") or ""
        if worker != me and worker.rpartition(":")[0] == host:
            return True
    return False


def count_finished(study: optuna.Study) -> tuple[int, int]:
    """(finished, running): finished = complete, rejected or failed, not interrupted."""
    finished = running = 0
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.RUNNING:
            running += 1
        elif t.state in TERMINAL and not t.user_attrs.get("interrupted"):
            finished += 1
    return finished, running
