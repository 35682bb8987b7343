"""Export of a CLI study's trial (`export_model`): the study's stored search configuration gives
the data set (test images to verify with, int8 calibration), the base model and the optional
recovery fine-tune's recipe."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from prunetune.compress import CompressionConfig, load_compressed_file
from prunetune.compress.artifact import check_model_name
from prunetune.errors import PrunetuneError
from prunetune.export.assemble import Origin
from prunetune.export.choice import choose_trial, trial_weights
from prunetune.export.files import check_export_flags, check_output, load_compressed, output_folder
from prunetune.export.inputs import VERIFY_IMAGES, ExportInputs
from prunetune.export.layers import check_int8
from prunetune.export.mlflow_log import log_export, search_tracking_uri
from prunetune.export.report import Card, write_card
from prunetune.export.verified import write_verified
from prunetune.models import Recipe, evaluate, recalibrate_bn, train
from prunetune.models.training import DivergedError
from prunetune.search.records import TrialRecord


def _dataset_inputs(
    cfg, rec: TrialRecord, int8: bool, model: str | None, log
) -> tuple[ExportInputs, object]:
    """(ExportInputs, DataBundle) of a CLI study: its data set's test images, its base model."""
    from prunetune.data import create_dataset
    from prunetune.models import get_base_model
    from prunetune.search.objective import base_recipe
    from prunetune.search.workload import calibration_batches

    bundle = create_dataset(cfg.task.dataset, data_root=cfg.task.data_root)
    base = get_base_model(
        cfg.task.model,
        bundle,
        recipe=base_recipe(cfg.base),
        seed=cfg.base.seed,
        checkpoint=cfg.task.checkpoint,
        log=log,
    )
    verify = torch.stack([bundle.test[i][0] for i in range(min(VERIFY_IMAGES, len(bundle.test)))])
    return ExportInputs(
        base=base.model,
        example=bundle.example_input(1),
        verify=verify,
        test_set=bundle.test,
        torch_test=lambda m: evaluate(m, bundle.test)["accuracy"],
        calibration=calibration_batches(bundle, rec.seed) if int8 else None,
        load=lambda path: load_compressed(path, model=model),
        base_metrics=base.meta.get("metrics", {}),
        base_checkpoint=str(base.path) if base.path else None,
        threads=cfg.measurement.threads,
    ), bundle


def _retrain(model: nn.Module, bundle, cfg, rec: TrialRecord, epochs: int, log) -> dict:
    """The final fine-tune of --retrain-epochs on the whole training split (lr halved, batch norms
    re-estimated as after a trial), in place; what it did, for the card."""
    from prunetune.models import resolve_device
    from prunetune.search.workload import recalibration_sampler

    device = resolve_device(
        cfg.measurement.device
    )  # the search's choice; the model stays on the CPU
    log(
        f"fine-tuning trial {rec.number} for {epochs} epoch(s) on the full training split "
        f"({device})"
    )
    try:
        hist = train(
            model,
            bundle.train,
            Recipe(epochs=epochs, lr=cfg.finetune.lr / 2, batch_size=cfg.finetune.batch_size),
            seed=rec.seed,
            device=device,
            train_threads=cfg.measurement.train_threads,
        )
    except DivergedError as exc:
        raise PrunetuneError(
            f"fine-tuning trial {rec.number} diverged ({exc}); export it without "
            f"--retrain-epochs or with fewer epochs"
        ) from None
    recalibrate_bn(
        model, bundle.train, sampler=recalibration_sampler(bundle, rec.seed), device=device
    )
    return {
        "epochs": epochs,
        "lr": cfg.finetune.lr / 2,
        "loss": hist.loss,
        "seconds": hist.seconds,
        "device": str(device),
        "val_accuracy_before": rec.metrics.get("accuracy"),
        "train_threads": hist.threads.as_context() if hist.threads else None,
        "val_accuracy": evaluate(model, bundle.val, device=device)["accuracy"],
    }


def _load_study(storage: str, study_name: str, trial: int | None, select: str | None):
    """(SearchResult, chosen trial, SearchSettings) of a stored study."""
    from prunetune.config import SearchSettings
    from prunetune.search.results import summarize
    from prunetune.search.study import load_existing

    result = summarize(load_existing(storage, study_name))
    rec = choose_trial(result, trial=trial, select=select)
    if not result.config:
        raise PrunetuneError(f"study {study_name!r} holds no prunetune search configuration")
    return result, rec, SearchSettings.from_stored(result.config)


def export_model(
    study_name: str,
    *,
    storage: str,
    out_dir: str | Path,
    trial: int | None = None,
    select: str | None = None,
    fmt: str = "onnx",
    int8: bool = False,
    retrain_epochs: int = 0,
    tracking_uri: str | None = None,
    register: bool = True,
    fps_repeats: int = 21,
    model: str | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> Card:
    """Export, verify and document one trial of a study (see the package docstring); its card.

    `--int8` keeps the trial's layers above 8 bits float. `tracking_uri` defaults to the one the
    search used; `register=False` skips MLflow. `model`: the `package.module:function` a study of
    a user architecture was built from (never imported because the study or file says so;
    CheckpointError without it). Relative paths (storage, stored weights) are resolved against the
    working directory, as during the search. Raises ConfigError for a bad format / flag
    combination; PrunetuneError for an unknown study or trial, an incomplete trial, a trial whose
    weights were not kept, --int8 on a trial with every layer float, or an fp32 file whose outputs
    do not match PyTorch (its card is written, nothing is registered).
    """
    check_export_flags(fmt, int8, retrain_epochs)
    check_output(out_dir, log)
    result, rec, cfg = _load_study(storage, study_name, trial, select)
    check_model_name(cfg.task.model, model)
    tracking_uri = search_tracking_uri(tracking_uri, cfg.stores.tracking_uri)
    rec.weights = str(trial_weights(rec, study_name, tracking_uri))
    compressed, header = load_compressed_file(rec.weights, model=model)
    check_int8(compressed, CompressionConfig.from_dict(header["config"]), rec, int8)
    out = output_folder(out_dir)
    inputs, bundle = _dataset_inputs(cfg, rec, int8, model, log)
    retrain = (
        _retrain(compressed, bundle, cfg, rec, retrain_epochs, log) if retrain_epochs else None
    )
    selection = f"trial {trial}" if trial is not None else select or "knee of the Pareto front"
    origin = Origin(study_name, storage, selection, runtime=cfg.measurement.runtime, result=result)
    card = write_verified(
        compressed,
        header,
        rec,
        inputs,
        out,
        fmt=fmt,
        int8=int8,
        fps_repeats=fps_repeats,
        origin=origin,
        retrain=retrain,
        log=log,
    )
    if register:
        return log_export(card, rec, tracking_uri, log)
    write_card(card)
    return card
