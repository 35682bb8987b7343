"""Export the chosen trial's compressed model, verified, with a report card.

Call order: choose the trial (--trial, --select rule, or the knee) -> reload its stored weights
(the exact model whose numbers are on the front) -> optional final retrain on the full training
split -> export (onnx | pt2 | state-dict; --int8 = ONNX Runtime static int8) -> verify: reload the
file in its own runtime, compare outputs with PyTorch, re-evaluate test accuracy, re-measure FPS
next to the base model -> card.json / card.md -> register the export in the MLflow Model Registry.
`load_compressed(DIR)` gives the model back as a torch module.
"""
from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prunetune.compress import load_compressed_file, save_compressed
from prunetune.errors import ConfigError, PrunetuneError
from prunetune.measure import count_macs, count_params
from prunetune.models import Recipe, evaluate, train
from prunetune.search.records import COMPLETE, TrialRecord

FORMATS = ("onnx", "pt2", "state-dict")
COMPRESSED_FILE = "compressed.pt"
FILES = {"onnx": "model.onnx", "pt2": "model.pt2", "state-dict": COMPRESSED_FILE}


@dataclass
class Card:
    """The report card of one export (also written as DIR/card.json and DIR/card.md)."""

    data: dict = field(default_factory=dict)

    def summary(self) -> str:
        d, c, b = self.data, self.data["compressed"], self.data["base"]
        return (f"exported trial {d['trial']} of study {d['study']} to {d['file']} "
                f"({d['format']}{', int8' if d['int8'] else ''}): test accuracy {c['test_accuracy']:.2%} "
                f"(base {b['test_accuracy']:.2%}), {c['file_bytes'] / 1e6:.2f} MB "
                f"({b['file_bytes'] / max(c['file_bytes'], 1):.1f}x smaller), "
                f"{c['fps']:,.0f} FPS ({c['fps'] / b['fps']:.1f}x the base on {d['runtime']['name']}); "
                f"verified: max |diff| {d['verification']['max_abs_diff']:.2e}, "
                f"top-1 agreement {d['verification']['top1_agreement']:.2%}")


def choose_trial(result, *, trial: int | None = None, select: str | None = None) -> TrialRecord:
    """The trial to export: an explicit number, the best front member under a rule, or the knee."""
    from prunetune.search import pareto

    if trial is not None:
        try:
            rec = result.record(trial)
        except KeyError:
            raise PrunetuneError(f"study {result.study_name!r} has no trial {trial}") from None
        if rec.state != COMPLETE:
            raise PrunetuneError(f"trial {trial} is {rec.state}"
                                 f"{': ' + rec.reason if rec.reason else ''}; export a complete trial")
        return rec
    front = result.front_records()
    if not front:
        raise PrunetuneError(f"study {result.study_name!r} has no complete trial yet")
    if select:
        return front[pareto.select([r.metrics for r in front], pareto.parse_rule(select))]
    return result.record(result.knee)


def _package_versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("prunetune", "torch", "torchvision", "torch-pruning", "onnx", "onnxruntime", "optuna", "mlflow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _write_format(model: nn.Module, fmt: str, example: torch.Tensor, directory: Path, *,
                  int8: bool, calibration: list[torch.Tensor] | None, bits: dict | None,
                  config=None, base_ref: dict | None = None) -> Path:
    from prunetune.runtimes import materialize, quantize_onnx_int8, to_onnx

    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "state-dict":
        return save_compressed(directory / COMPRESSED_FILE, model, config, base_ref)
    plain = materialize(model).eval()
    if fmt == "pt2":
        batch = torch.export.Dim("batch", min=1, max=4096)
        ep = torch.export.export(plain, (example.repeat(2, 1, 1, 1),), dynamic_shapes=({0: batch},))
        path = directory / FILES["pt2"]
        torch.export.save(ep, path)
        return path
    path = to_onnx(plain, example, directory / FILES["onnx"])
    if int8:
        q = quantize_onnx_int8(path, calibration or [], exclude=[n for n, b in (bits or {}).items() if b > 8],
                               path=directory / "model.int8.onnx")
        path.unlink()
        return Path(q)
    return Path(path)


def _file_runner(path: Path, fmt: str, threads: int):
    """A callable running the exported file in its own runtime (not the in-memory model)."""
    if fmt == "pt2":
        module = torch.export.load(path).module()

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return module(x)
        run.runtime, run.threads, run.kernels = "torch.export (pt2)", threads, []
        return run
    if fmt == "state-dict":
        model = load_compressed(path.parent)

        def run_sd(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return model(x)
        run_sd.runtime, run_sd.threads, run_sd.kernels = "torch", threads, []
        return run_sd
    from prunetune.runtimes import onnx_file_runner

    return onnx_file_runner(path, threads=threads)


def _evaluate_runner(run, dataset) -> tuple[float, np.ndarray]:
    from prunetune.models.training import _batches

    correct = n = 0
    outs = []
    for x, y in _batches(dataset, 250):
        out = torch.as_tensor(run(x))
        outs.append(out.argmax(1).numpy())
        correct += int((out.argmax(1) == y).sum())
        n += len(y)
    return correct / max(n, 1), np.concatenate(outs)


def export_model(study_name: str, *, storage: str, out_dir: str | Path, trial: int | None = None,
                 select: str | None = None, fmt: str = "onnx", int8: bool = False,
                 retrain_epochs: int = 0, tracking_uri: str | None = None, register: bool = True,
                 fps_repeats: int = 21, log=lambda m: None) -> Card:
    """Export, verify and document one trial of a study (see module docstring)."""
    from prunetune.data import create_dataset
    from prunetune.models import get_base_model
    from prunetune.runtimes import materialize, measure_fps
    from prunetune.search.objective import base_recipe, _calibration
    from prunetune.search.results import summarize
    from prunetune.search.study import load_existing
    from prunetune.config import SearchConfig

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ConfigError("--int8 runs through ONNX Runtime: use it with --format onnx")
    if retrain_epochs < 0:
        raise ConfigError(f"--retrain-epochs must be >= 0, got {retrain_epochs}")
    result = summarize(load_existing(storage, study_name))
    rec = choose_trial(result, trial=trial, select=select)
    if not rec.weights or not Path(rec.weights).is_file():
        raise PrunetuneError(f"the weights of trial {rec.number} were not kept (only the Pareto front's are, "
                             f"unless --keep-all-weights): choose a front member")
    cfg = SearchConfig(**result.config)
    bundle = create_dataset(cfg.dataset, data_root=cfg.data_root)
    base = get_base_model(cfg.model, bundle, recipe=base_recipe(cfg), seed=cfg.seed, checkpoint=cfg.checkpoint)
    from prunetune.compress import CompressionConfig

    model, header = load_compressed_file(rec.weights)
    config, base_ref = CompressionConfig.from_dict(header["config"]), header["base"]
    example = bundle.example_input(1)
    threads = cfg.threads
    recorded_test = result.test_accuracy.get(rec.number)
    retrain = None
    if retrain_epochs:
        log(f"retraining trial {rec.number} for {retrain_epochs} epochs on the full training split")
        hist = train(model, bundle.train, Recipe(epochs=retrain_epochs, lr=cfg.lr / 2, batch_size=cfg.batch_size),
                     seed=rec.seed)
        retrain = {"epochs": retrain_epochs, "loss": hist.loss, "seconds": hist.seconds}
    torch_test = evaluate(model, bundle.test)["accuracy"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bits = rec.config.get("bits", {})
    calibration = _calibration(bundle, rec.seed) if int8 else None
    save_compressed(out / COMPRESSED_FILE, model, config, base_ref)
    t0 = time.perf_counter()
    path = _write_format(model, fmt, example, out, int8=int8, calibration=calibration, bits=bits,
                         config=config, base_ref=base_ref)
    export_s = time.perf_counter() - t0
    run = _file_runner(path, fmt, threads)
    # verification: outputs vs PyTorch on real test images
    plain = materialize(model).eval()
    xs = torch.stack([bundle.test[i][0] for i in range(min(256, len(bundle.test)))])
    with torch.no_grad():
        ref = plain(xs)
    got = torch.as_tensor(run(xs))
    max_diff = float((got - ref).abs().max())
    agreement = float((got.argmax(1) == ref.argmax(1)).float().mean())
    file_test, _ = _evaluate_runner(run, bundle.test)
    # base model in the same format, measured side by side
    with tempfile.TemporaryDirectory() as tmp:
        base_path = _write_format(base.model, "onnx" if fmt == "onnx" else fmt, example, Path(tmp),
                                  int8=False, calibration=None, bits=None,
                                  config=CompressionConfig(ratios={}, bits={}), base_ref=base_ref)
        base_bytes = base_path.stat().st_size
        base_run = _file_runner(base_path, "onnx" if fmt == "onnx" else fmt, threads)
        timings = measure_fps({"compressed": run, "base": base_run}, example, repeats=fps_repeats)
    base_macs = count_macs(base.model, example)
    macs = count_macs(plain, example)
    kernels = sorted(getattr(run, "kernels", []))
    data = {
        "study": study_name, "trial": rec.number, "format": fmt, "int8": int8, "file": str(path),
        "selection": (f"trial {trial}" if trial is not None else select or "knee of the Pareto front"),
        "runtime": {"name": getattr(run, "runtime", fmt), "threads": threads, "batch_size": 1,
                    "kernels": kernels, "protocol": "median of interleaved samples, warm-up first"},
        "base": {"test_accuracy": base.meta["metrics"]["test_accuracy"],
                 "val_accuracy": base.meta["metrics"].get("val_accuracy"), "macs": base_macs,
                 "flops": 2 * base_macs, "params": count_params(base.model), "file_bytes": base_bytes,
                 "fps": timings["base"].fps, "latency_ms": timings["base"].median_ms,
                 "fps_spread": timings["base"].spread},
        "compressed": {"test_accuracy": file_test, "test_accuracy_torch": torch_test,
                       "recorded_test_accuracy": recorded_test,
                       "val_accuracy": rec.metrics.get("accuracy"), "macs": macs, "flops": 2 * macs,
                       "params": count_params(plain), "file_bytes": path.stat().st_size,
                       "packed_size_bytes": rec.metrics.get("size_bytes"),
                       "fps": timings["compressed"].fps, "latency_ms": timings["compressed"].median_ms,
                       "fps_spread": timings["compressed"].spread},
        "speedup": timings["compressed"].fps / timings["base"].fps,
        "size_ratio": base_bytes / max(path.stat().st_size, 1),
        "verification": {"max_abs_diff": max_diff, "top1_agreement": agreement, "images": len(xs)},
        "config": rec.config, "channels": _channels(plain), "retrain": retrain,
        "provenance": {"study": study_name, "storage": storage, "trial": rec.number, "seed": rec.seed,
                       "weights": rec.weights, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                       "export_seconds": export_s, "versions": _package_versions()},
    }
    card = Card(data)
    if register:
        data["provenance"]["mlflow"] = _register_export(study_name, rec, out, tracking_uri, card)
    (out / "card.json").write_text(json.dumps(data, indent=2, default=str))
    (out / "card.md").write_text(card_markdown(data))
    return card


def _channels(model: nn.Module) -> dict[str, int]:
    return {n: getattr(m, "out_channels", getattr(m, "out_features", 0)) for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d | nn.Linear)}


def _register_export(study: str, rec: TrialRecord, out: Path, tracking_uri: str | None, card: Card) -> dict:
    """Log DIR as artifacts of the study's latest search run and register it as a model version."""
    from prunetune.search.tracking import MlflowTracker

    tracker = MlflowTracker(tracking_uri)
    exp = tracker.client.get_experiment_by_name(study)
    if exp is None:
        return {"registered": False, "why": "no MLflow experiment for this study"}
    runs = tracker.client.search_runs([exp.experiment_id], "tags.`prunetune.role` = 'search'",
                                      order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return {"registered": False, "why": "no search run in the MLflow experiment"}
    run_id = runs[0].info.run_id
    artifact = f"export/trial-{rec.number}"
    (out / "card.json").write_text(json.dumps(card.data, indent=2, default=str))
    (out / "card.md").write_text(card_markdown(card.data))
    tracker.client.log_artifacts(run_id, str(out), artifact_path=artifact)
    version = tracker.register(study, rec, artifact=artifact, run_id=run_id,
                               description=f"exported trial {rec.number} ({card.data['format']})")
    return {"run_id": run_id, "artifact": artifact, "registered_model": f"prunetune-{study}",
            "version": version}


def card_markdown(d: dict) -> str:
    """The report card as Markdown (rendering only)."""
    b, c = d["base"], d["compressed"]
    rows = [("test accuracy", f"{b['test_accuracy']:.2%}", f"{c['test_accuracy']:.2%}"),
            ("MACs", f"{b['macs']:,}", f"{c['macs']:,}"), ("FLOPs (2 x MACs)", f"{b['flops']:,}", f"{c['flops']:,}"),
            ("params", f"{b['params']:,}", f"{c['params']:,}"),
            ("file size", f"{b['file_bytes']:,} B", f"{c['file_bytes']:,} B"),
            ("FPS (batch 1)", f"{b['fps']:,.0f} (IQR {b['fps_spread']:.0%})",
             f"{c['fps']:,.0f} (IQR {c['fps_spread']:.0%})")]
    lines = [f"# prunetune report card: study `{d['study']}`, trial {d['trial']}", "",
             f"Selected by: {d['selection']}. Format: {d['format']}{' (int8)' if d['int8'] else ''}, "
             f"file `{Path(d['file']).name}`.", "",
             "| | base | compressed |", "|---|---:|---:|"]
    lines += [f"| {a} | {x} | {y} |" for a, x, y in rows]
    rt = d["runtime"]
    lines += ["", f"Speedup {d['speedup']:.1f}x, file {d['size_ratio']:.1f}x smaller. FPS on {rt['name']}, "
              f"{rt['threads']} thread(s), batch 1, {rt['protocol']}; base and compressed measured side by side.",
              f"Kernels in the optimised graph: {', '.join(rt['kernels']) or 'n/a'}.", "",
              f"Verification on {d['verification']['images']} test images: max |output diff| vs PyTorch "
              f"{d['verification']['max_abs_diff']:.3g}, top-1 agreement {d['verification']['top1_agreement']:.2%}; "
              f"test accuracy in PyTorch {c['test_accuracy_torch']:.2%}, recorded during the search "
              f"{'-' if c['recorded_test_accuracy'] is None else format(c['recorded_test_accuracy'], '.2%')}.", "",
              "## Channels kept per layer", "", "| layer | out channels |", "|---|---:|"]
    lines += [f"| {n} | {k} |" for n, k in d["channels"].items()]
    lines += ["", "## Config", "", "```json", json.dumps(d["config"], indent=1), "```", "",
              "## Provenance", "", "```json", json.dumps(d["provenance"], indent=1, default=str), "```", ""]
    return "\n".join(lines)


def load_compressed(directory: str | Path) -> nn.Module:
    """The exported model of DIR as a float torch module (quantized weights folded in), eval mode."""
    from prunetune.runtimes import materialize

    path = Path(directory)
    path = path / COMPRESSED_FILE if path.is_dir() else path
    model, _ = load_compressed_file(path)
    return materialize(model).eval()


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)
