"""The parts of a search's settings, one frozen dataclass per concern. Each part checks itself when
built (prunetune.config.checks); a consumer takes the part it needs, not the whole settings.

Field names are the YAML keys and (with - for _) the CLI flags, except BaseRecipe's, which the
user writes base_epochs, base_lr, base_batch_size, base_seed (see prunetune.config.settings.FLAT).
List fields are never changed after a part is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prunetune.config import checks

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"


@dataclass(frozen=True)
class Task:
    """What is compressed: a model (zoo name, torchvision:NAME, module:function) on a data set."""

    model: str = "mnist_net"
    dataset: str = "mnist5k"
    data_root: str | None = None
    checkpoint: str | None = None  # a trained base; None: train one with the BaseRecipe

    def __post_init__(self) -> None:
        checks.check_task(self)


@dataclass(frozen=True)
class BaseRecipe:
    """How the base model is trained when no checkpoint is given (`prunetune train`'s flags and
    search's base_* keys). With the Task's model and dataset it is the whole key of the cached
    base: one recipe, one cached file."""

    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0  # kept apart from the study seed so that studies share one base

    def __post_init__(self) -> None:
        checks.check_base_recipe(self)


@dataclass(frozen=True)
class Stores:
    """Where a study and its results are kept, and which weights are kept."""

    study: str | None = None  # None: MODEL-DATASET (see SearchSettings.study_name)
    storage: str | None = None  # Optuna storage URL
    tracking_uri: str | None = None  # MLflow tracking URI
    keep_all_weights: bool = False  # every trial's weights, not only the front's

    def __post_init__(self) -> None:
        checks.check_stores(self)

    @property
    def storage_url(self) -> str:
        return self.storage or DEFAULT_STORAGE


@dataclass(frozen=True)
class Budget:
    """When a run stops starting trials: `trials` finished in the study, or `timeout` seconds."""

    trials: int = 30
    timeout: float | None = None

    def __post_init__(self) -> None:
        checks.check_budget(self)


@dataclass(frozen=True)
class SearchPlan:
    """How configurations are proposed: the strategy, its own options, the sampler and the study
    seed (every trial's seed derives from it and the trial number)."""

    strategy: str = "targets"
    targets: list[float] | None = None
    candidates: int = 8
    proxy_steps: int | None = None
    screen: int = 0
    parametrization: str = "ratios"
    sampler: str = "tpe"
    seed: int = 0

    def __post_init__(self) -> None:
        checks.check_plan(self)

    @property
    def screening(self) -> bool:
        """Multi-fidelity screening is on: `--screen N` (N >= 1) with strategy `search`. Off by
        default until bench/deep_search.py shows it finds better fronts at equal wall time."""
        return self.strategy == "search" and self.screen > 0


@dataclass(frozen=True)
class Selection:
    """What is optimised, what a trial must meet, and which front member is picked."""

    objectives: list[str] = field(default_factory=lambda: ["accuracy", "flops", "fps"])
    min_accuracy: float | None = None
    max_flops: float | None = None
    select: str | None = None  # a selection rule; None: the default pick (see max_drop)
    max_drop: float = 0.01

    def __post_init__(self) -> None:
        checks.check_selection(self)


@dataclass(frozen=True)
class SpaceSpec:
    """The search space: a YAML file (`space`), else derived from the model with these ranges."""

    space: str | None = None
    granularity: str = "layer"
    ratio_min: float = 0.0
    ratio_max: float = 0.95
    ratio_step: float = 0.05
    round_to: int = 1
    bits: list[int] = field(default_factory=lambda: [32, 8, 6, 4])
    importance: list[str] = field(default_factory=lambda: ["l2"])

    def __post_init__(self) -> None:
        checks.check_space_spec(self)


@dataclass(frozen=True)
class FinetuneRecipe:
    """The brief fine-tune of every trial on a class-balanced subset."""

    subset: int = 2500
    epochs: int = 3
    lr: float = 1e-3
    lr_scaling: float = 1.5  # below 1/4 of the MACs: lr x (0.25 / kept) ** lr_scaling (pruned_lr)
    batch_size: int = 64
    distill: float = 0.0

    def __post_init__(self) -> None:
        checks.check_finetune(self)

    def proxy_steps(self, plan: SearchPlan) -> int:
        """Steps of the proxy's short fine-tune: `plan.proxy_steps`, else for `targets` an eighth
        of this fine-tune's steps (at least 4), else 0 (batch norms only)."""
        if plan.proxy_steps is not None:
            return plan.proxy_steps
        if plan.strategy != "targets" or self.epochs == 0:
            return 0
        return max(4, self.epochs * math.ceil(self.subset / self.batch_size) // 8)


@dataclass(frozen=True)
class Measurement:
    """Where trials train and evaluate, and how speed is measured."""

    device: str = "auto"
    runtime: str = "torch"
    threads: int = 1  # FPS measurement's threads
    train_threads: int | str = checks.AUTO_THREADS
    fps_repeats: int = 11

    def __post_init__(self) -> None:
        checks.check_measurement(self)  # then a flag's "3" is kept as the number 3
        object.__setattr__(self, "train_threads", checks.check_train_threads(self.train_threads))


@dataclass(frozen=True)
class Runner:
    """Which runner starts trials; Ray's resources and cluster address."""

    backend: str = "optuna"
    workers: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str | None = None

    def __post_init__(self) -> None:
        checks.check_runner(self)
