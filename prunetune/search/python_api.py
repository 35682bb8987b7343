"""`prunetune.run_search`: the search around the caller's own model and training loop.

The same runners, study storage, resume, MLflow tracking, Pareto front, constraints and Ray backend
as `prunetune search`; only the workload differs: the CLI's data set and recipe there
(`DatasetWorkload`), the caller's `train_fn` / `eval_fn` here (`UserWorkload`). Call order:
check the arguments -> a SearchSettings from them (`search_config`) -> `prepare_user_search` (the
base measured with eval_fn, the space from its inventory) -> the runner of `backend` with the MLflow
tracker -> a `SearchRun` (front, knee, reloaded models, export, a pandas table).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from prunetune.config import SearchSettings
from prunetune.errors import ConfigError
from prunetune.models import BaseModel
from prunetune.models.factory import check_single_output
from prunetune.search import strategies
from prunetune.search.objective import SearchSetup, build_space, measure_base, missing_objectives
from prunetune.search.api_settings import search_config
from prunetune.search.records import TrialRecord
from prunetune.search.results import SearchResult
from prunetune.search.workload import UserFunctionError, UserWorkload, metrics_of


def _checked_input(
    model: nn.Module, example_input: torch.Tensor
) -> tuple[nn.Module, torch.Tensor, int]:
    """(a copy of `model` on the CPU in eval mode: the search's base, one-sample input (1, C, H, W),
    output width) after one forward pass of the copy; ConfigError otherwise."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_example(example_input)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise ConfigError(
            "the model's weights are on the meta device (no data): pass a model "
            "with real "
            "weights (e.g. model.to_empty(device='cpu') and load them)"
        )
    x = (
        (example_input if example_input.ndim == 4 else example_input.unsqueeze(0))[:1]
        .detach()
        .cpu()
        .float()
    )
    base = copy.deepcopy(model).cpu().eval()
    try:
        with torch.no_grad():
            out = base(x)
    except Exception as exc:  # noqa: BLE001 - the caller's model on the caller's input
        raise ConfigError(
            f"the model does not accept example_input {tuple(x.shape)}: {type(exc).__name__}: "
            f"{str(exc)[:200]}"
        ) from None
    check_single_output(out, "the model")
    return base, x, int(out.shape[-1]) if out.ndim >= 1 else 0


def _check_example(example_input: object) -> None:
    """ConfigError, one line, unless `example_input` is a real tensor (C, H, W) or a batch
    (N, C, H, W) with at least one sample and no empty dimension (not on the meta device)."""
    if not isinstance(example_input, torch.Tensor) or example_input.ndim not in (3, 4):
        raise ConfigError(
            "example_input must be a tensor (C, H, W) or a batch (N, C, H, W) the model accepts"
        )
    if example_input.is_meta:
        raise ConfigError(
            "example_input is on the meta device (a shape without data): pass a real "
            "tensor, e.g. torch.zeros(1, C, H, W)"
        )
    if 0 in example_input.shape:
        raise ConfigError(
            f"example_input has an empty dimension {tuple(example_input.shape)}: "
            f"pass at "
            "least one sample, e.g. a batch of shape (1, C, H, W)"
        )


def prepare_user_search(
    cfg: SearchSettings,
    base_model: nn.Module,
    example: torch.Tensor,
    workload: UserWorkload,
    weights_dir: Path,
    classes: int,
) -> SearchSetup:
    """The SearchSetup of a Python API search: `base_model` (the search's own copy of the caller's
    model) as the base, scored once with eval_fn (and test_fn when given), the space from its
    inventory, the base's FPS on the CPU."""
    from prunetune.compress import inventory

    try:
        scored = metrics_of("eval_fn", workload.eval_fn, copy.deepcopy(base_model))
        test = workload.test_accuracy(copy.deepcopy(base_model))
    except UserFunctionError as exc:  # on the base: the caller's input, refused before any write
        raise ConfigError(f"the base model: {exc}") from None
    meta = {
        "metrics": {
            "val_accuracy": scored["accuracy"],
            "test_accuracy": test,
            "user_metrics": {k: v for k, v in scored.items() if k != "accuracy"},
        },
        "num_classes": classes,
    }
    base = BaseModel(model=base_model, meta=meta, path=None)
    inv = inventory(base_model, example)
    space = strategies.make_space(
        cfg, build_space(cfg.space_spec, cfg.task.model, inv), base_model, example, None
    )
    dims = space.summary()
    if not dims["ratio_dims"] and not dims["bits_dims"]:
        raise ConfigError(
            f"nothing to search in {type(base_model).__name__}: no prunable channel group and "
            "one bit-width (left unpruned: "
            f"{', '.join(f'{n} ({why})' for n, why in inv.skipped) or 'nothing'})"
        )
    setup = SearchSetup(
        config=cfg,
        bundle=None,
        base=base,
        space=space,
        base_metrics={},
        weights_dir=weights_dir,
        skipped_layers=list(inv.skipped),
        workload=workload,
        device="cpu",
        example=example,
    )
    setup.base_metrics = measure_base(setup)
    try:
        missing_objectives(cfg.selection.objectives, setup.base_metrics)
    except UserFunctionError as exc:
        raise ConfigError(f"the base model: {exc}") from None
    return setup


def _check_picklable(workload: UserWorkload) -> None:
    """With Ray the functions travel to worker processes: ConfigError now rather than inside Ray."""
    from ray import cloudpickle

    for name in ("train_fn", "eval_fn", "test_fn"):
        fn = getattr(workload, name)
        try:
            cloudpickle.dumps(fn)
        except Exception as exc:  # noqa: BLE001 - whatever the pickler refuses
            raise ConfigError(
                f"with backend='ray', {name} must be picklable (cloudpickle: {type(exc).__name__}: "
                f"{str(exc)[:200]}); define it at module level, without locks, open files or "
                "sessions in its closure"
            ) from None


@dataclass
class SearchRun:
    """The outcome of `run_search`: the study's records (`records`, `front`, `knee`: TrialRecords;
    `record.metrics["accuracy"]` reads a metric), the SearchResult underneath (`result`), and what a
    user does next: `model(record)`, `export(record, out_dir)`, `trials_dataframe()`."""

    result: SearchResult
    setup: SearchSetup

    @property
    def tracking_uri(self) -> str:
        return self.setup.config.stores.tracking_uri

    @property
    def study_name(self) -> str:
        return self.result.study_name

    @property
    def records(self) -> list[TrialRecord]:
        return self.result.records

    @property
    def front(self) -> list[TrialRecord]:
        return self.result.front_records()

    @property
    def knee(self) -> TrialRecord | None:
        return None if self.result.knee is None else self.result.record(self.result.knee)

    def model(self, record: TrialRecord | int) -> nn.Module:
        """The compressed model of a trial whose weights were kept (front members; every trial
        with keep_all_weights=True), reloaded exactly, as a float torch module in eval mode."""
        from prunetune.export import trial_weights
        from prunetune.runtimes import materialize

        rec = self._record(record)
        return materialize(
            self.setup.load_trial(trial_weights(rec, self.study_name, self.tracking_uri))
        )

    def export(
        self,
        record: TrialRecord | int,
        out_dir: str | Path,
        fmt: str = "onnx",
        *,
        register: bool = True,
        fps_repeats: int = 21,
        retrain: int = 0,
        log: Callable[[str], None] = lambda m: None,
    ):
        """Export, verify and document a trial as `prunetune export` does (onnx | pt2 | state-dict;
        card.json + card.md; MLflow run + registered version when `register`); returns the Card.
        Verified on `example_input`'s batch plus 63 seeded random inputs of its shape. `retrain`:
        a recovery fine-tune first, your train_fn run that many more times (the card reports
        eval_fn's accuracy before and after)."""
        from prunetune.search.user_export import export_user_trial

        return export_user_trial(
            self,
            self._record(record),
            out_dir,
            fmt=fmt,
            register=register,
            fps_repeats=fps_repeats,
            retrain=retrain,
            log=log,
        )

    def trials_dataframe(self):
        """Every trial as a pandas DataFrame (params, metrics, state; front members flagged)."""
        from prunetune.search.results import trials_dataframe

        return trials_dataframe(self.result)

    def _record(self, record: TrialRecord | int) -> TrialRecord:
        return self.result.record(record if isinstance(record, int) else record.number)


def run_search(
    model: nn.Module,
    example_input: torch.Tensor,
    train_fn: Callable[[nn.Module], object],
    eval_fn: Callable[[nn.Module], dict],
    *,
    objectives: Sequence[str] | Mapping[str, str] = ("accuracy", "flops"),
    trials: int = 30,
    study_name: str | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    backend: str = "optuna",
    test_fn: Callable[[nn.Module], dict] | None = None,
    log: Callable[[str], None] = lambda m: None,
    **options,
) -> SearchRun:
    """Search per-layer pruning ratios (and bit-widths) of the caller's trained `model`.

    Each trial compresses a copy, calls `train_fn(model)` (fine-tune in place, any device; the model
    comes back to the CPU), then `eval_fn(model) -> dict` ("accuracy" required; any other metric may
    be an objective: objectives={"map": "maximize", "flops": "minimize"}), measures MACs, FPS and
    size. `test_fn` (optional, like eval_fn) scores front members on held-out data. `options`: the
    other search settings by their config names (sampler, seed, timeout, strategy, granularity,
    ratio_min, ratio_max, bits, importance, min_accuracy, max_flops, threads, fps_repeats,
    workers, cpus_per_trial, keep_all_weights, ...; `prunetune search --help` describes them).
    The study lives in `storage` (default sqlite:///mlruns/optuna.db), trial weights under
    mlruns/prunetune/<study>/weights, tracking in MLflow (`tracking_uri`, default as the CLI's);
    re-running with the same study name resumes it. A train_fn or eval_fn that raises, or an
    eval_fn without "accuracy" or a named objective's metric, fails that trial with the reason
    (five alike in a row stop the search). Raises ConfigError (one line) for bad arguments; with
    backend="ray" the functions must be picklable."""
    from prunetune.paths import weights_dir

    base_model, example, classes = _checked_input(model, example_input)
    for name, fn in (("train_fn", train_fn), ("eval_fn", eval_fn), ("test_fn", test_fn)):
        if fn is not None and not callable(fn):
            raise ConfigError(f"{name} must be callable, got {type(fn).__name__}")
    cfg = search_config(
        type(model).__name__,
        objectives=objectives,
        trials=trials,
        study_name=study_name,
        storage=storage,
        tracking_uri=tracking_uri,
        backend=backend,
        options=options,
    )
    workload = UserWorkload(train_fn, eval_fn, test_fn, num_classes=classes or None)
    if backend == "ray":
        _check_picklable(workload)
    weights = weights_dir(cfg.study_name).resolve()
    setup = prepare_user_search(cfg, base_model, example, workload, weights, classes)
    return SearchRun(_run(cfg, setup, log), setup)


def weights_fingerprint(model: nn.Module) -> str:
    """A hash of the model's parameters and buffers (names, shapes, dtypes, bytes)."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


class SameBaseCheck:
    """A SearchListener: a study of an in-memory model keeps that model's weights ("base_weights",
    set when the study starts); resuming it from other weights is a ConfigError before any trial."""

    def __init__(self, setup: SearchSetup) -> None:
        self.fingerprint = weights_fingerprint(setup.base.model)

    def on_search_start(self, setup: SearchSetup, study) -> None:
        stored = study.user_attrs.get("base_weights")
        if stored is None:
            study.set_user_attr("base_weights", self.fingerprint)
        elif stored != self.fingerprint:
            raise ConfigError(
                f"study {study.study_name!r} was searched from other weights of "
                f"{setup.config.task.model}; pass another study_name (or the same model to resume "
                "it)"
            )

    def on_trial_end(self, record, study) -> None:
        pass

    def on_search_end(self, result, study, *, outcome: str) -> None:
        pass


def _run(cfg: SearchSettings, setup: SearchSetup, log: Callable[[str], None]) -> SearchResult:
    """The CLI's runner dispatch (search.api.run) with the same MLflow tracking and --select
    registration; the store is checked before anything is written."""
    from prunetune.search.api import run, selection_warning, threads_warning
    from prunetune.paths import check_home
    from prunetune.search.study import check_storage
    from prunetune.search.tracking import MlflowTracker, check_store

    check_storage(cfg.stores.storage_url)
    check_store(cfg.stores.tracking_uri)
    check_home()  # its lock files
    for warning in filter(None, [threads_warning(cfg.measurement.threads)]):
        log(warning)
    listeners = [
        SameBaseCheck(setup),
        MlflowTracker(cfg.stores.tracking_uri, select=cfg.selection.select),
    ]
    result = run(cfg, log=log, listeners=listeners, setup=setup)
    warning = selection_warning(result, cfg.selection.select)
    if warning:
        log(warning)
    return result
