"""`Space`: what a search space offers the runners, the trial and the study.

Four spaces implement it: `SearchSpace` (per-group ratios and per-layer bits, the `search`
strategy), `AllocationSpace` (a level and per-group allocations), `SweepSpace` (one target swept
on a grid: the `uniform`, `global` and `sensitivity` baselines) and `TargetSpace` (MACs targets
met by construction: the `targets` strategy). Call order: the study is opened with `sampler()`
(None: the search config's sampler), `fingerprint()` and `to_dict()` (a study keeps one space),
then enqueues `warm_start()`; for every trial the runner asks `exhausted(study)` (a plan that is
done stops the search), then `suggest(trial)`; the trial `decode`s the params into a
CompressionConfig. `summary()` describes the space in logs and MLflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import optuna

    from prunetune.compress import CompressionConfig


@runtime_checkable
class Space(Protocol):
    """See the module docstring."""

    @property
    def quant_layers(self) -> list[str]:
        """The quantizable layers (every one gets a bit-width in a decoded config)."""

    def suggest(self, trial: optuna.trial.Trial) -> dict:
        """The params of one trial, asked from `trial` (enqueued values come back as they are)."""

    def decode(self, params: dict) -> CompressionConfig:
        """A trial's params as a CompressionConfig (ConfigError for params it cannot decode)."""

    def warm_start(self) -> list[dict]:
        """Params to enqueue when the study is created (may be empty)."""

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler | None:
        """The sampler this space needs (a sweep's grid), or None for the configured one."""

    def exhausted(self, study: optuna.Study) -> bool:
        """True when the space's plan is done (a sweep ran every target); False while it is not."""

    def summary(self) -> dict:
        """Dimensions and settings, for logs and MLflow."""

    def to_dict(self) -> dict:
        """The underlying per-group space, as YAML/JSON (see SearchSpace.to_dict)."""

    def fingerprint(self) -> str:
        """A hash of everything that defines the space (a study keeps one)."""
