"""A search's settings: small frozen parts (parts.py), checked in one place (checks.py), composed
into SearchSettings with the one map from the flat keys users write (settings.py); bounded YAML
reading (yaml_io.py)."""

from prunetune.config.checks import (
    AUTO_THREADS,
    DEVICE_PATTERN,
    GRANULARITIES,
    MAX_SEED,
    check_targets,
    check_train_threads,
)
from prunetune.config.parts import (
    BaseRecipe,
    Budget,
    FinetuneRecipe,
    Measurement,
    Runner,
    SearchPlan,
    Selection,
    SpaceSpec,
    Stores,
    Task,
)
from prunetune.config.settings import CONFIG_VERSION, FLAT, PARTS, SearchSettings
from prunetune.config.yaml_io import read_yaml_mapping

__all__ = [
    "AUTO_THREADS",
    "CONFIG_VERSION",
    "DEVICE_PATTERN",
    "FLAT",
    "GRANULARITIES",
    "MAX_SEED",
    "PARTS",
    "BaseRecipe",
    "Budget",
    "FinetuneRecipe",
    "Measurement",
    "Runner",
    "SearchPlan",
    "SearchSettings",
    "Selection",
    "SpaceSpec",
    "Stores",
    "Task",
    "check_targets",
    "check_train_threads",
    "read_yaml_mapping",
]
