"""What every trial of one search shares (`SearchSetup`): the config, data, base model, space,
the base's metrics and runners, where weights go, the workload and the device."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from prunetune.compress import load_compressed_file
from prunetune.config import SearchSettings
from prunetune.data import DataBundle
from prunetune.models import BaseModel
from prunetune.search.quiet import QuietLock
from prunetune.search.workload import Workload
from prunetune.spaces import SearchSpace


@dataclass
class SearchSetup:
    """What every trial of one search shares. Picklable (Ray ships it to workers once); `runners`,
    the base model's runners keyed by (runtime, threads), is left out of the pickle (ONNX Runtime
    sessions do not travel) and built again where needed. `device`: where trials train.
    `workload`: what trials do with data (see prunetune.search.workload); `bundle` is the CLI's data
    set (None for a search of the Python API, whose `example` is the user's one-sample input)."""

    config: SearchSettings
    bundle: DataBundle | None
    base: BaseModel
    space: SearchSpace
    base_metrics: dict
    weights_dir: Path
    skipped_layers: list
    workload: Workload
    device: str = "cpu"
    example: torch.Tensor | None = None
    runners: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "runners"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, runners={})

    @property
    def lock(self) -> QuietLock:
        return QuietLock()

    @property
    def in_memory(self) -> bool:
        """The base model is the caller's object (Python API), not a registry name."""
        return self.bundle is None

    def example_input(self) -> torch.Tensor:
        return self.bundle.example_input(1) if self.bundle is not None else self.example

    def load_trial(self, path: str | Path) -> nn.Module:
        """A trial's saved model, rebuilt from this search's base model."""
        if self.in_memory:
            return load_compressed_file(path, base_model=self.base.model)[0]
        return load_compressed_file(path, model=self.config.task.model)[0]
