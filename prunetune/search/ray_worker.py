"""The worker side of a Ray search: the Tune trainable that runs one prunetune trial per step
(`trainable_class`), the device it trains on, and its weights shipped to the driver through the
object store (`ship_weights` into a `WeightsSink` actor pinned to the driver's node: no shared
filesystem needed)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from prunetune.config import SearchSettings
from prunetune.search.objective import run_trial
from prunetune.search.objectives import get_objective
from prunetune.search.records import TrialRecord
from prunetune.search.setup import SearchSetup
from prunetune.search.study import worker_id

NUMBER_KEY = (
    "_prunetune_trial"  # the Optuna trial number of a Ray trial (names its record and weights)
)
REPLAY_KEY = "_prunetune_replay_of"  # the trial it re-runs (whose seed it uses), or None
RECORD_KEY = "prunetune_record"  # the TrialRecord as JSON (Tune flattens nested dicts in results)
WEIGHTS_SHIP_LIMIT = 512 * 2**20  # bytes of one trial's weights file sent back to the driver


def trainable_class():
    from ray import tune

    class PrunetuneTrial(tune.Trainable):
        """One Tune trial = one prunetune trial, run in a single step. `setup` (the SearchSetup)
        arrives once per actor from the object store; a reused actor keeps it for later trials."""

        def setup(self, config: dict, setup: SearchSetup, sink) -> None:  # noqa: ARG002 (config: see step)
            import tempfile

            # weights go to this node's temp folder first, then to the driver (see ship_weights)
            local = Path(tempfile.mkdtemp(prefix=f"prunetune-{setup.config.study_name}-"))
            self._prunetune = dataclasses.replace(
                setup, weights_dir=local, device=str(trial_device(setup.config))
            )
            self._sink = sink

        def cleanup(self) -> None:
            import shutil

            shutil.rmtree(self._prunetune.weights_dir, ignore_errors=True)

        def reset_config(self, new_config: dict) -> bool:  # noqa: ARG002 (self.config is set by Tune)
            return True

        def step(self) -> dict:
            import ray

            params = dict(self.config)
            number, replay_of = int(params.pop(NUMBER_KEY)), params.pop(REPLAY_KEY, None)
            record = run_trial(self._prunetune, params, number, replay_of=replay_of)
            ship_weights(record, self._sink)
            out: dict = {
                RECORD_KEY: json.dumps(record.as_dict()),
                "done": True,
                "node_id": ray.get_runtime_context().get_node_id(),
                "ray_worker": worker_id(),
            }
            # Tune insists the searcher's metrics are in every result; the searcher uses the record
            for o in self._prunetune.config.selection.objectives:
                key = get_objective(o).key
                out[key] = record.metrics.get(key)
            return out

    return PrunetuneTrial


def ship_weights(record: TrialRecord, sink, limit: int = WEIGHTS_SHIP_LIMIT) -> None:
    """Move the trial's weights file (on this node) to the driver through `sink` (a WeightsSink
    actor handle) and point `record.weights` at the driver's copy. Above `limit` bytes the file
    is dropped and the record says so (the trial keeps its metrics; export refuses it)."""
    import ray

    if not record.weights:
        return
    local = Path(record.weights)
    try:
        size = local.stat().st_size
        if size > limit:
            record.weights = None
            record.reason = (
                f"weights not kept: {size / 2**20:.0f} MiB is above the {limit / 2**20:.0f} MiB "
                f"a Ray trial ships to the driver"
            )
            return
        record.weights = ray.get(sink.put.remote(local.name, local.read_bytes()))
    finally:
        local.unlink(missing_ok=True)


def weights_sink(directory: Path):
    """A WeightsSink actor on the driver's node (no CPU reserved) that writes the files trials send
    into `directory`, atomically (temp file + rename)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    class WeightsSink:
        def __init__(self, folder: str) -> None:
            self.folder = Path(folder)
            self.folder.mkdir(parents=True, exist_ok=True)

        def put(self, name: str, data: bytes) -> str:
            path = self.folder / Path(name).name
            tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            return str(path)

    here = ray.get_runtime_context().get_node_id()
    return WeightsSink.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)
    ).remote(str(directory))


def trial_device(cfg: SearchSettings):
    """A Ray trial's device: the GPU Ray gave its actor (CUDA_VISIBLE_DEVICES) when
    --gpus-per-trial > 0, else the CPU (cfg.measurement.device agrees: SearchSettings checks it)."""
    from prunetune.models import resolve_device

    return resolve_device("cuda" if cfg.runner.gpus_per_trial > 0 else "cpu")
