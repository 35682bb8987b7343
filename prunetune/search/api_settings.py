"""The settings of a Python API search (`prunetune.run_search`): the parts of SearchSettings it
composes from its arguments and options, and the options that need data prunetune does not have
around the caller's own loop, refused with one line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prunetune.config import AUTO_THREADS, FLAT, PARTS, SearchSettings, Task
from prunetune.config.parts import DEFAULT_STORAGE
from prunetune.errors import ConfigError
from prunetune.search.objectives import get_objective, user_objective

# the parts of the settings run_search composes: not the Task, BaseRecipe or FinetuneRecipe (the
# caller's model, data and loop replace them)
API_PARTS = ("stores", "budget", "plan", "selection", "space_spec", "measurement", "runner")
# keys of those parts run_search sets itself: from its own arguments, or fixed (`device`: trials
# run on the CPU, train_fn moves the model where it likes; train_fn picks its threads)
ARGUMENT_KEYS = ("objectives", "trials", "study", "storage", "tracking_uri", "backend")
FIXED = {"device": "cpu", "train_threads": AUTO_THREADS}
OPTIONS = tuple(
    k for k, (part, _) in FLAT.items() if part in API_PARTS and k not in (*ARGUMENT_KEYS, *FIXED)
)
DATA_FREE_RUNTIMES = (
    "torch",
    "onnxruntime",
)  # int8 runtimes calibrate on data prunetune does not have here


def objective_names(objectives: Sequence[str] | Mapping[str, str]) -> list[str]:
    """Objective names for the config: built-in names (`accuracy`, `flops`, `macs`, `fps`, `size`,
    `params`) as they are, a mapping {metric: "maximize" | "minimize"} as built-in names or
    `metric:direction` for the caller's own metrics (see get_objective)."""
    if isinstance(objectives, str):
        raise ConfigError(
            "objectives must be a sequence of names or a mapping {metric: direction}, "
            "not one string"
        )
    if isinstance(objectives, set | frozenset):  # its order would change with the hash seed
        raise ConfigError(
            "objectives must be ordered (a list, a tuple or a dict), not a set: "
            "their order is "
            "the study's, and a set's order changes from run to run (resume would "
            "be refused)"
        )
    if isinstance(objectives, Mapping):
        return [user_objective(str(m), str(d)) for m, d in objectives.items()]
    names = [str(o) for o in objectives]
    for name in names:
        get_objective(name)
    return names


def search_config(
    label: str,
    *,
    objectives,
    trials: int,
    study_name: str | None,
    storage: str | None,
    tracking_uri: str | None,
    backend: str,
    options: dict,
) -> SearchSettings:
    """The validated settings of a Python API search: the parts it takes (API_PARTS) composed
    from its arguments and `options` (flat keys, OPTIONS), the Task naming the caller's model
    `label` and its data "user". ConfigError (one line) naming a bad option."""
    bad = sorted(str(k) for k in set(options) - set(OPTIONS))
    if bad:
        raise ConfigError(
            f"run_search does not take {', '.join(bad)}: the fine-tune and the data are train_fn's "
            f"and eval_fn's; options are {', '.join(sorted(OPTIONS))}"
        )
    from prunetune.paths import absolute_sqlite
    from prunetune.search.tracking import requested_uri

    values = {
        **options,
        **FIXED,
        "objectives": objective_names(objectives),
        "trials": trials,
        "study": study_name,
        "storage": absolute_sqlite(storage or DEFAULT_STORAGE),
        "tracking_uri": absolute_sqlite(requested_uri(tracking_uri)),
        "backend": backend,
    }
    parts = {
        part: PARTS[part](**{FLAT[k][1]: v for k, v in values.items() if FLAT[k][0] == part})
        for part in API_PARTS
    }
    cfg = SearchSettings(task=Task(model=label, dataset="user"), **parts)
    if cfg.plan.screen:
        raise ConfigError(
            "screening scores configs without fine-tuning, with batch-norm statistics re-estimated "
            "on prunetune's own data: not available around your loop (screen=0)"
        )
    if cfg.plan.strategy == "sensitivity":
        raise ConfigError(
            "strategy 'sensitivity' scans the data prunetune holds for the CLI: use search, "
            "uniform or global around your own loop"
        )
    if "taylor" in cfg.space_spec.importance:
        raise ConfigError(
            "importance 'taylor' needs labelled batches prunetune does not have here: use l1, l2 "
            "or another data-free criterion"
        )
    if cfg.measurement.runtime not in DATA_FREE_RUNTIMES:
        raise ConfigError(
            f"runtime {cfg.measurement.runtime!r} calibrates int8 on data prunetune does not have "
            f"here: use {' or '.join(DATA_FREE_RUNTIMES)}"
        )
    return cfg
