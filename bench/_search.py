"""Search-study machinery shared by search_quality.py and search_vs_random.py.

A *task* is one of:
- ("base", model): train (or find in the cache) the model's base on mnist5k, seed 0;
- ("study", model, sampler, seed): one `run_search` study (objectives accuracy + flops);
- ("uniform", model, seed): the uniform-ratio sweep, one `run_trial` per global ratio.

Studies live in per-study SQLite files under the scratch directory, so a bench that is stopped
and started again resumes them (`run_search` continues a study up to its budget), and a second
bench asking for the same study (same name, same settings) reuses it instead of recomputing.
Workers run one torch thread each (two workers on two cores; under a busy neighbour one-thread
kernels hold up far better than two-thread ones).
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

OBJECTIVES = ["accuracy", "flops"]


@dataclass(frozen=True)
class Settings:
    """Per-model search settings (identical for every sampler of that model)."""

    trials: int
    epochs: int
    subset: int
    granularity: str
    base_epochs: int
    uniform_trials: int
    fps_repeats: int = 3

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Task:
    kind: str
    model: str
    sampler: str = ""
    seed: int = 0
    settings: Settings | None = None

    @property
    def name(self) -> str:
        s = self.settings
        tag = f"e{s.epochs}-n{s.subset}-{s.granularity}-b{s.base_epochs}" if s else ""
        if self.kind == "base":
            return f"base-{self.model}"
        if self.kind == "uniform":
            return f"{self.model}-uniform-s{self.seed}-{tag}"
        return f"{self.model}-{self.sampler}-s{self.seed}-{tag}"


def uniform_ratios(n: int, step: float = 0.05, high: float = 0.95) -> list[float]:
    """n ratios evenly spread over [step, high] (on the `step` grid), in coarse-to-fine (van der
    Corput) order, so every prefix of the sweep is spread over the range and the whole sweep
    reaches `high`."""
    cells = round(high / step)
    n = min(n, cells)
    grid = []
    for i in range(n):
        r = round(round((step + (high - step) * i / max(n - 1, 1)) / step) * step, 6)
        if r not in grid:
            grid.append(r)
    order: list[int] = []
    k = 0
    while len(order) < len(grid):
        v, denom, i = 0.0, 1.0, k
        while i:
            denom *= 2
            v += (i % 2) / denom
            i //= 2
        idx = min(len(grid) - 1, math.floor(v * len(grid)))
        if idx not in order:
            order.append(idx)
        k += 1
        if k > 10_000:  # cannot happen; keeps the loop obviously finite
            order += [i for i in range(len(grid)) if i not in order]
    return [grid[i] for i in order]


def base_recipe_for(settings: Settings):
    """The search's base recipe (prunetune's defaults) with the bench's base epochs."""
    from prunetune.config import BaseRecipe
    from prunetune.search.objective import base_recipe

    return base_recipe(BaseRecipe(epochs=settings.base_epochs))


def base_path(model: str, settings: Settings) -> Path:
    """Where get_base_model caches this model's seed-0 base (computed the same way)."""
    from prunetune.models.checkpoint import cache_key, home_dir

    return (
        home_dir()
        / "checkpoints"
        / f"{model}-mnist5k-{cache_key(model, 'mnist5k', 0, base_recipe_for(settings))}.pt"
    )


def _config(task: Task, workdir: Path, *, granularity: str | None = None):
    from prunetune.config import SearchSettings

    s = task.settings
    return SearchSettings.from_flat(
        model=task.model,
        dataset="mnist5k",
        checkpoint=str(base_path(task.model, s)),
        base_epochs=s.base_epochs,
        seed=task.seed,
        study=task.name,
        storage=f"sqlite:///{workdir / 'studies' / (task.name + '.db')}",
        trials=s.trials,
        sampler=task.sampler if task.kind == "study" else "tpe",
        objectives=list(OBJECTIVES),
        granularity=granularity or s.granularity,
        bits=[32],
        epochs=s.epochs,
        subset=s.subset,
        fps_repeats=s.fps_repeats,
        threads=1,
    )


def _wait_for(path: Path, timeout_s: float = 1800) -> None:
    t = time.time()
    while not path.is_file():
        if time.time() - t > timeout_s:
            raise TimeoutError(f"base checkpoint {path} did not appear")
        time.sleep(2)


def _record(r, channels: dict[str, int], test_accuracy: float | None = None) -> dict:
    """A trial's summary; `test_accuracy`: the study's for a front member scored on the test split
    (SearchResult.test_accuracy)."""
    from prunetune.compress import kept_channels

    ratios = r.config.get("ratios", {}) if r.config else {}
    return {
        "number": r.number,
        "state": r.state,
        "reason": r.reason,
        "params": r.params,
        "ratios": ratios,
        "kept": {g: kept_channels(c, ratios.get(g, 0.0)) for g, c in channels.items()}
        if ratios
        else {},
        "metrics": {k: r.metrics.get(k) for k in ("accuracy", "macs", "flops", "params")}
        | {"test_accuracy": test_accuracy},
        "timings": dict(r.timings),
    }


def run_task(task: Task, workdir: str) -> dict:
    """Run one task in this (worker) process; returns a JSON-able summary."""
    import torch

    torch.set_num_threads(1)
    workdir = Path(workdir)
    os.chdir(workdir)
    t0 = time.perf_counter()
    if task.kind == "base":
        from prunetune.data import create_dataset
        from prunetune.models import get_base_model

        bundle = create_dataset("mnist5k")
        base = get_base_model(task.model, bundle, recipe=base_recipe_for(task.settings), seed=0)
        return {
            "task": task.name,
            "kind": "base",
            "model": task.model,
            "path": str(base.path),
            "metrics": base.meta.get("metrics"),
            "train_seconds": base.meta.get("train_seconds"),
            "wall_s": time.perf_counter() - t0,
        }
    _wait_for(base_path(task.model, task.settings))
    if task.kind == "study":
        import optuna

        from prunetune.search.optuna_runner import run_search
        from prunetune.search.results import summarize
        from prunetune.search.study import count_finished

        cfg = _config(task, workdir)
        db = workdir / "studies" / f"{task.name}.db"
        study = (
            optuna.load_study(study_name=cfg.study_name, storage=cfg.stores.storage_url)
            if db.is_file() and cfg.study_name in optuna.get_all_study_names(cfg.stores.storage_url)
            else None
        )
        if study is not None and count_finished(study) == (cfg.budget.trials, 0):
            result = summarize(
                study
            )  # finished earlier: reuse it (no base model, no timing needed)
        else:
            result = run_search(cfg)
            study = optuna.load_study(study_name=cfg.study_name, storage=cfg.stores.storage_url)
        channels = {g: v["channels"] for g, v in study.user_attrs["space"]["groups"].items()}
        return {
            "task": task.name,
            "kind": "study",
            "model": task.model,
            "sampler": task.sampler,
            "seed": task.seed,
            "settings": task.settings.as_dict(),
            "base_metrics": result.base_metrics,
            "front": result.front,
            "records": [
                _record(r, channels, result.test_accuracy.get(r.number))
                for r in result.records
                if r.state in ("complete", "failed", "rejected")
            ],
            "wall_s": time.perf_counter() - t0,
        }
    # uniform sweep: one run_trial per ratio, every group at that ratio (granularity "global")
    from prunetune.search.objective import prepare_search, run_trial
    from prunetune.search.records import TrialRecord

    cfg = _config(task, workdir, granularity="global")
    cache = workdir / "uniform" / f"{task.name}.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    done = json.loads(cache.read_text()) if cache.is_file() else {"records": []}
    ratios = uniform_ratios(task.settings.uniform_trials)
    have = {r["number"] for r in done["records"]}
    if not all(i in have for i in range(len(ratios))) or "base_metrics" not in done:
        setup = prepare_search(
            cfg, weights_dir=workdir / "mlruns" / "prunetune" / task.name / "weights"
        )
        done["base_metrics"] = dict(setup.base_metrics)
        channels = {g: s.channels for g, s in setup.space.groups.items()}
        for i, ratio in enumerate(ratios):
            if i in have:
                continue
            rec: TrialRecord = run_trial(setup, {"ratio:all": ratio}, i)
            if rec.weights:
                Path(rec.weights).unlink(missing_ok=True)
            done["records"].append(_record(rec, channels) | {"ratio": ratio})
            cache.write_text(json.dumps(done))
    base_metrics = done["base_metrics"]
    return {
        "task": task.name,
        "kind": "uniform",
        "model": task.model,
        "sampler": "uniform",
        "seed": task.seed,
        "settings": task.settings.as_dict(),
        "base_metrics": base_metrics,
        "records": sorted(done["records"], key=lambda r: r["number"]),
        "wall_s": time.perf_counter() - t0,
    }


def run_tasks(tasks: list[Task], workdir: Path, workers: int, log=print) -> list[dict]:
    """Run tasks on `workers` spawned one-thread processes, in the given order (FIFO)."""
    out = []
    ctx = get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(run_task, t, str(workdir)): t for t in tasks}
        for fut in as_completed(futures):
            try:
                res = fut.result()
            except Exception as exc:  # noqa: BLE001 - one broken task must not lose the others
                log(
                    f"[{time.strftime('%H:%M:%S')}] FAILED {futures[fut].name}: "
                    f"{type(exc).__name__}: {exc}"
                )
                continue
            log(
                f"[{time.strftime('%H:%M:%S')}] done {res['task']} in {res['wall_s']:.0f} s "
                f"(load {os.getloadavg()[0]:.1f})"
            )
            out.append(res)
    return out


# ---------------------------------------------------------------------------------------------
# analysis


def hv_curve(result: dict, upto: int | None = None) -> list[float]:
    """Hypervolume of the complete trials among the first k, for k = 1..n (trial order), with the
    base model's metrics as `normalise_by` (accuracy: validation; flops)."""
    from prunetune.search import pareto

    recs = sorted(result["records"], key=lambda r: r["number"])
    n = upto or len(recs)
    base = result["base_metrics"]
    out = []
    for k in range(1, n + 1):
        pts = [r["metrics"] for r in recs[:k] if r["state"] == "complete"]
        out.append(pareto.hypervolume(pts, OBJECTIVES, normalise_by=base) if pts else 0.0)
    return out


def best_accuracy_under(result: dict, macs_fraction: float) -> float | None:
    """Best validation accuracy among complete trials with MACs <= fraction x base MACs."""
    base = result["base_metrics"]["macs"]
    accs = [
        r["metrics"]["accuracy"]
        for r in result["records"]
        if r["state"] == "complete" and r["metrics"]["macs"] <= macs_fraction * base
    ]
    return max(accs) if accs else None


def trial_seconds(result: dict) -> list[float]:
    return [r["timings"].get("total_s", 0.0) for r in result["records"] if r["state"] == "complete"]


@dataclass
class Grouped:
    by: dict = field(default_factory=dict)  # (model, sampler) -> [results sorted by seed]

    @classmethod
    def of(cls, results: list[dict]) -> "Grouped":
        g = cls()
        for r in results:
            if r["kind"] in ("study", "uniform"):
                g.by.setdefault((r["model"], r["sampler"]), []).append(r)
        for v in g.by.values():
            v.sort(key=lambda r: r["seed"])
        return g
