"""Export: every format round-trips (the file in its own runtime matches PyTorch, `load_compressed`
gives the trial's model back), the card holds the documented figures, int8 runs int8 kernels, the
MLflow model version points to the exported files, and user mistakes are one clear error.

One real search (tiny_cnn on digits, all weights kept) is shared by the module; its folder is the
working directory of every export, as for a user (stored weight paths are relative to it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import onnx
import onnxruntime as ort
import optuna
import pytest
import torch
from mlflow import MlflowClient

import prunetune
from prunetune.cli import main
from prunetune.compress import load_compressed_file
from prunetune.errors import ConfigError, PrunetuneError
from prunetune.export import (
    CARD_JSON,
    CARD_MD,
    WEIGHTS_FILE,
    Card,
    export_model,
)
from prunetune.export.choice import choose_trial
from prunetune.export.mlflow_log import foreign_artifacts
from prunetune.models import evaluate
from prunetune.runtimes import materialize
from prunetune.search.results import summarize
from prunetune.search.study import load_existing
from tests.helpers import search_args

pytestmark = pytest.mark.slow

STUDY = "x"
CASES = {
    "onnx": ("onnx", False),
    "onnx-int8": ("onnx", True),
    "pt2": ("pt2", False),
    "state-dict": ("state-dict", False),
}
FPS_REPEATS = 3  # the card's timing protocol is not under test here; keep exports quick


class Study:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.storage = f"sqlite:///{root / 'mlruns' / 'optuna.db'}"
        self.tracking = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"

    def result(self):
        return summarize(load_existing(self.storage, STUDY))

    def cli(self, *args: str) -> list[str]:
        return [
            "export",
            "--study",
            STUDY,
            "--storage",
            self.storage,
            "--tracking-uri",
            self.tracking,
            *args,
        ]

    def export(self, out: Path, **kw) -> Card:
        kw.setdefault("fps_repeats", FPS_REPEATS)
        return export_model(
            STUDY, storage=self.storage, tracking_uri=self.tracking, out_dir=out, **kw
        )


@pytest.fixture(scope="module")
def study(tmp_path_factory, prunetune_home) -> Study:
    root = tmp_path_factory.mktemp("export-study")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("PRUNETUNE_HOME", prunetune_home)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        # the per-group search: its warm start has an 8-bit trial (int8 export needs one)
        assert main(search_args(STUDY, 5, "--strategy", "search", "--keep-all-weights")) == 0
    return Study(root)


@pytest.fixture
def in_study(study, monkeypatch) -> Study:
    monkeypatch.chdir(study.root)
    return study


def _quantized(rec) -> bool:
    return any(b <= 8 for b in rec.config["bits"].values())


def _expected_trial(result, key: str) -> int:
    """The knee (the default pick); for int8, a front member with quantized layers if the knee has
    none (the knee varies with FPS noise; an all-float trial has nothing to run as int8)."""
    if CASES[key][1] and not _quantized(result.record(result.knee)):
        return next(r.number for r in result.front_records() if _quantized(r))
    return result.knee


@pytest.fixture(scope="module")
def exports(study, tmp_path_factory, prunetune_home) -> dict[str, Card]:
    """The knee of the front exported in every format (see `_expected_trial` for int8)."""
    out = tmp_path_factory.mktemp("exports")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(study.root)
        mp.setenv("PRUNETUNE_HOME", prunetune_home)
        result = study.result()
        cards = {}
        for key, (fmt, int8) in CASES.items():
            number = _expected_trial(result, key)
            cards[key] = study.export(
                out / key, fmt=fmt, int8=int8, trial=None if number == result.knee else number
            )
        return cards


def _float_trial(result) -> int:
    """A complete, pruned trial with every layer float: its exports must reproduce its accuracy."""
    for r in result.records:
        if (
            r.state == "complete"
            and any(r.config["ratios"].values())
            and all(b > 8 for b in r.config.get("bits", {}).values())
        ):
            return r.number
    raise AssertionError("the warm start should have run a uniform 0.5 float trial")


def _digits():
    from prunetune.data import create_dataset

    return create_dataset("digits")


def _test_images(n: int = 128) -> torch.Tensor:
    test = _digits().test
    return torch.stack([test[i][0] for i in range(min(n, len(test)))])


def _run_file(card: Card, x: torch.Tensor) -> torch.Tensor:
    """The exported file run by its own runtime, independently of prunetune's runners."""
    if card.data.format == "onnx":
        session = ort.InferenceSession(str(card.model_path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    if card.data.format == "pt2":
        with torch.no_grad():
            return torch.export.load(card.model_path).module()(x)
    with torch.no_grad():
        return prunetune.load_compressed(card.directory)(x)


# ------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("key", CASES)
def test_round_trip(key, exports, in_study):
    card = exports[key]
    x = _test_images()
    module = prunetune.load_compressed(card.directory)
    assert isinstance(module, torch.nn.Module) and not module.training
    with torch.no_grad():
        ref = module(x)
        # load_compressed(DIR) is the trial's stored model, not a retrained or re-pruned one
        stored, _ = load_compressed_file(in_study.result().record(card.data.trial).weights)
        assert torch.equal(materialize(stored)(x), ref)
    got = _run_file(card, x)
    if card.data.int8:
        assert (got.argmax(1) == ref.argmax(1)).float().mean() >= 0.9
    else:
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("key", CASES)
def test_card_fields(key, exports, in_study):
    card = exports[key]
    d = card.data.to_json()  # the on-disk format
    assert json.loads((card.directory / CARD_JSON).read_text()) == json.loads(
        json.dumps(d, default=str)
    )
    assert sorted(p.name for p in card.directory.iterdir()) == sorted(
        {CARD_JSON, CARD_MD, WEIGHTS_FILE, d["file"]}
    )
    result = in_study.result()
    assert d["trial"] == _expected_trial(result, key)
    assert d["selection"] == (
        "knee of the Pareto front" if d["trial"] == result.knee else f"trial {d['trial']}"
    )
    for side in ("base", "compressed"):
        for k in (
            "runtime",
            "test_accuracy",
            "macs",
            "flops",
            "params",
            "file_bytes",
            "fps",
            "latency_ms",
        ):
            assert d[side][k] is not None, (side, k)
        assert d[side]["flops"] == 2 * d[side]["macs"] and d[side]["fps"] > 0
    assert d["compressed"]["file_bytes"] == card.model_path.stat().st_size
    assert d["speedup"] == pytest.approx(d["compressed"]["fps"] / d["base"]["fps"])
    assert d["size_ratio"] == pytest.approx(d["base"]["file_bytes"] / d["compressed"]["file_bytes"])
    assert d["runtime"]["threads"] == 1 and d["runtime"]["batch_size"] == 1
    expected_runtime = {
        "onnx": "onnxruntime",
        "onnx-int8": "onnxruntime-int8",
        "pt2": "torch.export (pt2)",
        "state-dict": "torch",
    }[key]
    assert d["compressed"]["runtime"] == d["runtime"]["compressed"] == expected_runtime
    # accuracy: through the file's runtime vs the figure recorded during the search
    rec = result.record(d["trial"])
    assert d["compressed"]["recorded_test_accuracy"] == result.test_accuracy[rec.number]
    assert d["compressed"]["test_accuracy_torch"] == d["compressed"]["recorded_test_accuracy"]
    assert d["verification"]["outputs_match"]
    assert (
        abs(d["verification"]["accuracy_delta"]) <= 0.02
    )  # activation fake-quant is search-time only
    # config and channels kept per layer
    assert d["config"] == rec.config
    kept = {row["layer"]: row for row in d["layers"]}
    for layer, bits in rec.config["bits"].items():
        assert kept[layer]["bits"] == bits
        assert kept[layer]["runs_as"] == ("int8" if d["int8"] and bits <= 8 else "float32")
    assert all(row["kept_channels"] <= row["base_channels"] for row in d["layers"])
    assert d["compressed"]["params"] <= d["base"]["params"]
    prov = d["provenance"]
    assert prov["study"] == STUDY and prov["trial"] == d["trial"] and "torch" in prov["versions"]
    assert (
        prov["mlflow"]["export_run_id"]
        and prov["mlflow"]["search_run_id"]
        and prov["mlflow"]["trial_run_id"]
    )
    md = (card.directory / CARD_MD).read_text()
    for text in (
        "| test accuracy |",
        "| FPS (batch 1) |",
        "| file size |",
        "## Layers",
        "## Provenance",
        expected_runtime,
        prov["mlflow"]["export_run_id"],
    ):
        assert text in md, text


def test_int8_runs_int8_kernels(exports):
    fp32, int8 = exports["onnx"], exports["onnx-int8"]
    assert {"QLinearConv", "QGemm"} <= set(int8.data.runtime.kernels)
    assert "QLinearConv" in (int8.directory / CARD_MD).read_text()
    assert fp32.data.runtime.kernels == [] and fp32.data.runtime.op_types
    ops = {n.op_type for n in onnx.load(str(int8.model_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert int8.data.base.runtime == "onnxruntime"  # next to the float base model


def test_registered_version_points_to_the_export(exports, study, tmp_path):
    client = MlflowClient(study.tracking)
    sources = set()
    for card in exports.values():
        ml = card.data.provenance.mlflow
        mv = client.get_model_version(ml["registered_model"], str(ml["version"]))
        assert mv.run_id == ml["export_run_id"] and mv.source == ml["source"]
        assert mv.source.endswith("/export") and mv.tags["file"] == card.data.file
        assert client.get_run(mv.run_id).data.tags["mlflow.parentRunId"] == ml["search_run_id"]
        folder = Path(unquote(urlparse(mv.source).path))
        assert (folder / card.data.file).read_bytes() == card.model_path.read_bytes()
        assert (
            json.loads((folder / CARD_JSON).read_text())["provenance"]["mlflow"]["version"]
            == ml["version"]
        )
        sources.add(mv.source)
    assert len(sources) == len(exports)  # one export never overwrites another's artifacts
    # what a user downloads from the registry is the exported model
    got = Path(client.download_artifacts(ml["export_run_id"], "export", str(tmp_path)))
    assert (got / card.data.file).read_bytes() == card.model_path.read_bytes()


def test_a_copied_study_folder_does_not_log_into_the_original():
    db = "sqlite:////copy/mlruns/mlflow.db"
    assert foreign_artifacts(db, "file:///copy/mlruns/artifacts/x") is None
    assert foreign_artifacts(db, "file:///orig/mlruns/artifacts/x") == "/orig/mlruns/artifacts/x"
    assert foreign_artifacts(db, "s3://bucket/artifacts/x") is None


# --------------------------------------------------------------------------- CLI, trial choice


def test_cli_export_of_a_float_trial_reproduces_its_accuracy(in_study, tmp_path, capsys):
    result = in_study.result()
    number = _float_trial(result)
    out = tmp_path / "cli"
    assert main(in_study.cli("--trial", str(number), "--format", "onnx", "--out", str(out))) == 0
    stdout = capsys.readouterr().out
    assert f"exported trial {number}" in stdout and str(out / CARD_MD) in stdout
    d = json.loads((out / CARD_JSON).read_text())
    assert d["trial"] == number and d["selection"] == f"trial {number}"
    recorded = result.test_accuracy.get(number)
    if recorded is None:  # not on the front: the search scored it on validation only
        recorded = evaluate(load_compressed_file(result.record(number).weights)[0], _digits().test)[
            "accuracy"
        ]
    assert abs(d["compressed"]["test_accuracy"] - recorded) <= 0.005
    assert d["verification"]["max_abs_diff"] < 1e-4


def test_retrain_epochs_show_the_new_figures(in_study, tmp_path):
    knee = in_study.result().knee
    card = in_study.export(tmp_path / "rt", fmt="state-dict", retrain_epochs=1, register=False)
    d = card.data.to_json()
    assert d["retrain"]["epochs"] == 1 and len(d["retrain"]["loss"]) == 1
    assert d["compressed"]["val_accuracy"] == d["retrain"]["val_accuracy"]
    assert d["verification"]["accuracy_delta"] is None and d["provenance"]["mlflow"] is None
    module = prunetune.load_compressed(card.directory)
    assert d["compressed"]["test_accuracy"] == evaluate(module, _digits().test)["accuracy"]
    stored, _ = load_compressed_file(in_study.result().record(knee).weights)
    x = _test_images(32)
    with torch.no_grad():
        assert not torch.equal(
            module(x), materialize(stored)(x)
        )  # the retrained weights were exported
    assert "recovery fine-tune: 1 more epoch(s)" in (card.directory / CARD_MD).read_text()


def test_choose_trial_by_rule(study):
    result = study.result()
    fastest = max(result.front_records(), key=lambda r: r.metrics["fps"])
    assert choose_trial(result, select="max fps where accuracy>=0").number == fastest.number
    assert choose_trial(result).number == result.knee
    with pytest.raises(ConfigError):
        choose_trial(result, trial=0, select="max fps")


def test_public_api():
    assert prunetune.export_model is export_model
    assert {"export_model", "load_compressed"} <= set(prunetune.__all__)


# ------------------------------------------------------------------------------------ user errors


@pytest.fixture
def failed_trial(in_study, tmp_path) -> tuple[str, int]:
    """A copy of the study's storage with a failed trial added (storage URL, trial number)."""
    db = tmp_path / "optuna.db"
    shutil.copy(in_study.root / "mlruns" / "optuna.db", db)
    storage = f"sqlite:///{db}"
    copy = optuna.load_study(study_name=STUDY, storage=storage)
    copy.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            user_attrs={
                "record": {"state": "failed", "reason": "diverged: loss became nan in epoch 1"}
            },
        )
    )
    return storage, len(copy.trials) - 1


def _expect_user_error(args: list[str], capsys, *, contains: str) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunetune: error:") and contains in lines[0], (
        captured.err
    )
    assert "Traceback" not in captured.err


def test_errors_unknown_trial_and_study_and_int8_pt2(in_study, tmp_path, capsys):
    out = str(tmp_path / "out")
    _expect_user_error(
        in_study.cli("--trial", "999", "--out", out), capsys, contains="has no trial 999"
    )
    _expect_user_error(
        ["export", "--study", "nope", "--storage", in_study.storage, "--out", out],
        capsys,
        contains="no study 'nope'",
    )
    _expect_user_error(
        in_study.cli("--format", "pt2", "--int8", "--out", out), capsys, contains="--int8"
    )
    with pytest.raises(ConfigError):
        in_study.export(tmp_path / "o", fmt="pt2", int8=True)
    with pytest.raises(PrunetuneError, match="has no trial 999"):
        in_study.export(tmp_path / "o", trial=999)
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_error_int8_of_an_all_float_trial(in_study, tmp_path, capsys):
    number = _float_trial(in_study.result())
    _expect_user_error(
        in_study.cli("--trial", str(number), "--int8", "--out", str(tmp_path / "o")),
        capsys,
        contains="keeps every layer float",
    )


def test_error_failed_trial(failed_trial, in_study, tmp_path, capsys):
    storage, number = failed_trial
    args = [
        "export",
        "--study",
        STUDY,
        "--storage",
        storage,
        "--trial",
        str(number),
        "--out",
        str(tmp_path / "o"),
    ]
    _expect_user_error(args, capsys, contains=f"trial {number} of study 'x' is failed (diverged")
    with pytest.raises(PrunetuneError, match="is failed"):
        export_model(STUDY, storage=storage, out_dir=tmp_path / "o", trial=number)


def test_error_weights_not_kept(in_study, tmp_path, capsys):
    result = in_study.result()
    rec = next(
        r for r in reversed(result.records) if r.state == "complete" and r.number != result.knee
    )
    weights = Path(rec.weights)
    aside = tmp_path / weights.name
    shutil.move(weights, aside)
    try:  # nor in the tracking store named (MLflow keeps the front's weights: export fetches them)
        args = in_study.cli("--trial", str(rec.number), "--out", str(tmp_path / "o"))
        args[args.index("--tracking-uri") + 1] = f"sqlite:///{tmp_path / 'no-store' / 'mlflow.db'}"
        _expect_user_error(args, capsys, contains="were not kept")
        assert not (tmp_path / "no-store").exists()  # looking for the weights created no store
    finally:
        shutil.move(aside, weights)


def test_error_trial_file_naming_user_code_is_refused_unless_named(in_study, tmp_path, capsys):
    """A stored trial file that names `module:function` is not rebuilt on its own word
    (issue 14)."""
    rec = in_study.result().record(in_study.result().knee)
    weights = Path(rec.weights)
    aside = tmp_path / weights.name
    shutil.copy(weights, aside)
    payload = torch.load(weights, weights_only=True)
    payload["base"]["model"] = "sys:exit"
    torch.save(payload, weights)
    try:
        args = in_study.cli("--trial", str(rec.number), "--out", str(tmp_path / "o"))
        _expect_user_error(
            args, capsys, contains="built from user code sys:exit; pass model='sys:exit'"
        )
        _expect_user_error(
            [*args, "--model", "other.mod:build"],
            capsys,
            contains="built from 'tiny_cnn', not from 'other.mod:build'",
        )
    finally:
        shutil.move(aside, weights)
    assert not (tmp_path / "o").exists()


def test_export_fetches_a_front_members_weights_from_mlflow_when_the_file_is_gone(
    in_study, tmp_path
):
    """Another machine, or the search's folder cleaned: the front's weights come back from the
    study's MLflow runs (front_models/), into this folder's mlruns/prunetune/<study>/weights."""
    result = in_study.result()
    rec = result.record(result.knee)
    weights = Path(rec.weights)
    aside = tmp_path / weights.name
    shutil.move(weights, aside)
    try:
        card = in_study.export(tmp_path / "o", trial=rec.number, fmt="state-dict", register=False)
        assert card.data.trial == rec.number
        assert weights.is_file()  # fetched back where the search kept it
    finally:
        if not weights.is_file():
            shutil.move(aside, weights)


def test_an_unrelated_model_file_in_out_is_never_overwritten(in_study, tmp_path, capsys):
    """Decided: a --out folder holding model.onnx (or card.json, ...) that no prunetune export wrote
    is refused with one line, before anything is read or written (it used to be overwritten
    without a word)."""
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"someone else's model")
    assert main(in_study.cli("--format", "onnx", "--out", str(out))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "already holds model.onnx, not written by a prunetune export" in err[0]
    ), err
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]
    assert (out / "model.onnx").read_bytes() == b"someone else's model"


def test_a_second_export_into_one_out_replaces_the_first_and_says_so(in_study, tmp_path, capsys):
    """Decided: an export into a folder holding an earlier prunetune export replaces it, logs one
    line naming it, and leaves exactly one export there (no stale model file of another format)."""
    out = tmp_path / "one"
    result = in_study.result()
    other = next(
        r.number for r in result.records if r.state == "complete" and r.number != result.knee
    )
    assert main(in_study.cli("--format", "onnx", "--out", str(out))) == 0
    capsys.readouterr()
    assert main(in_study.cli("--trial", str(other), "--format", "pt2", "--out", str(out))) == 0
    err = capsys.readouterr().err
    assert (
        f"replacing the earlier export in {str(out)!r} (study 'x', trial {result.knee}, model.onnx)"
        in err
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [CARD_JSON, CARD_MD, WEIGHTS_FILE, "model.pt2"]
    )
    assert json.loads((out / CARD_JSON).read_text())["trial"] == other
