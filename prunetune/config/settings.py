"""SearchSettings: the parts of a search's settings composed, and the one place where the flat
keys users write (YAML `--config`, CLI flags, the stored config of a study) map onto the parts.

Precedence: defaults < YAML file (`--config`) < flags given on the command line. Unknown keys and
values of the wrong type are a ConfigError naming the key. The resolved settings are stored with the
study (and logged to MLflow) as a flat mapping with a `config_version` (CONFIG_VERSION) so that a
search can be re-run and resumed exactly; a study stored before versions (version 1: the same flat
keys, no `config_version`) still loads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prunetune.config import checks
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
from prunetune.config.yaml_io import read_yaml_mapping
from prunetune.errors import ConfigError
from prunetune.names import default_study_name

CONFIG_VERSION = 2  # 1: the flat SearchConfig of prunetune before parts (no `config_version` key)
VERSION_KEY = "config_version"  # also an MLflow param of the search run: named for what it is


@dataclass(frozen=True)
class SearchSettings:
    """Everything a search needs, one part per concern; checked when built (each part, then
    checks.check_settings for the rules that join parts)."""

    task: Task = field(default_factory=Task)
    base: BaseRecipe = field(default_factory=BaseRecipe)
    stores: Stores = field(default_factory=Stores)
    budget: Budget = field(default_factory=Budget)
    plan: SearchPlan = field(default_factory=SearchPlan)
    selection: Selection = field(default_factory=Selection)
    space_spec: SpaceSpec = field(default_factory=SpaceSpec)
    finetune: FinetuneRecipe = field(default_factory=FinetuneRecipe)
    measurement: Measurement = field(default_factory=Measurement)
    runner: Runner = field(default_factory=Runner)

    def __post_init__(self) -> None:
        checks.check_settings(self)

    @property
    def study_name(self) -> str:
        """`study`, else a valid name derived from model and dataset (see prunetune.names)."""
        study = self.stores.study
        return (
            study if study is not None else default_study_name(self.task.model, self.task.dataset)
        )

    @property
    def proxy_fine_tune_steps(self) -> int:
        """Steps of the targets proxy's short fine-tune (see FinetuneRecipe.proxy_steps)."""
        return self.finetune.proxy_steps(self.plan)

    @classmethod
    def from_flat(cls, /, **values: object) -> SearchSettings:
        """The settings of flat keys (`trials=9, base_lr=0.01, ...`), defaults for the others;
        ConfigError (one line) for an unknown key or a bad value."""
        unknown = sorted(str(k) for k in values if k not in FLAT)
        if unknown:
            names = ", ".join(k if k.isidentifier() else repr(k) for k in unknown)
            raise ConfigError(f"unknown config key(s) {names}")
        given: dict[str, dict] = {name: {} for name in PARTS}
        for key, value in values.items():
            part, name = FLAT[key]
            given[part][name] = value
        return cls(**{part: PARTS[part](**kwargs) for part, kwargs in given.items()})

    def flat(self) -> dict:
        """The flat keys and values (lists copied): what YAML and flags write."""
        out = {}
        for key, (part, name) in FLAT.items():
            value = getattr(getattr(self, part), name)
            out[key] = list(value) if isinstance(value, list) else value
        return out

    def to_stored(self) -> dict:
        """The mapping stored with a study and logged to MLflow (see from_stored)."""
        return {VERSION_KEY: CONFIG_VERSION, **self.flat()}

    @classmethod
    def from_stored(cls, stored: Mapping) -> SearchSettings:
        """Settings read back from a study: version 2 (to_stored) or 1 (flat keys, no version).
        ConfigError for a version this prunetune does not know."""
        values = dict(stored)
        version = values.pop(VERSION_KEY, 1)
        if version not in (1, CONFIG_VERSION):
            raise ConfigError(
                f"the study's config is of version {version!r}; this prunetune reads versions "
                f"1 to {CONFIG_VERSION} (a newer prunetune stored it?)"
            )
        return cls.from_flat(**values)

    @classmethod
    def from_sources(
        cls, yaml_path: str | Path | None = None, overrides: Mapping | None = None
    ) -> SearchSettings:
        """Defaults, then the YAML file (flat keys), then explicit overrides (flags the user gave;
        None: not given)."""
        values: dict = {}
        if yaml_path is not None:
            values.update(read_yaml_mapping(yaml_path, "config"))
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        try:
            return cls.from_flat(**{str(k): v for k, v in values.items()})
        except ConfigError as exc:
            where = repr(str(yaml_path)) if yaml_path is not None else "flags"
            if str(exc).startswith("unknown config key"):
                raise ConfigError(f"{exc} in {where}") from None
            raise


def _keys_of(part: type, prefix: str = "") -> dict[str, str]:
    return {prefix + f.name: f.name for f in dataclasses.fields(part)}


# part attribute -> its class, in the order flags are listed
PARTS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(SearchSettings)}
# flat key (YAML key, flag, stored key) -> (part attribute, field): the one mapping
FLAT: dict[str, tuple[str, str]] = {
    key: (part, name)
    for part, cls in PARTS.items()
    for key, name in _keys_of(cls, "base_" if cls is BaseRecipe else "").items()
}


def part_defaults(part: str) -> dict[str, object]:
    """Flat key -> default of each field of `part` (without building it: --help builds nothing
    that imports torch)."""
    out = {}
    for key, (owner, name) in FLAT.items():
        if owner == part:
            f = next(f for f in dataclasses.fields(PARTS[part]) if f.name == name)
            out[key] = (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
    return out
