"""`prunetune search` finds what it found before: the same seed gives the same trial params, the
same compression configs, MACs and FLOPs, and on the CPU the same accuracies, front and knee as the
stored reference (tests/data/search_reference.json; see tests/data/make_search_reference.py for
when and how to regenerate it).

Accuracy is compared exactly, not within a tolerance: two fresh runs of the generator on the
reference machine write identical files (with torch at 1 or 2 threads), because every random draw
is seeded (sampler, base model initialisation and training, subsets, fine-tuning) and the search
runs with OMP_NUM_THREADS=1. Bit-for-bit equality of floats needs the same torch build and the same
CPU kernels, so on another torch version or CPU instruction set only the accuracy test is skipped,
saying why; params, configs, MACs and FLOPs are compared everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from prunetune.search.results import summarize, trials_dataframe
from prunetune.search.study import make_storage
from tests.data.make_search_reference import REFERENCE, STUDY, environment, run_search, snapshot

pytestmark = pytest.mark.slow

STRUCTURE = (
    "number",
    "state",
    "params",
    "config",
    "macs",
    "flops",
)  # independent of float rounding


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A fresh folder in which the reference search has just run again."""
    folder = tmp_path_factory.mktemp("reference-search")
    run_search(folder)
    return folder


@pytest.fixture(scope="module")
def now(workdir) -> dict:
    return snapshot(workdir)


def test_reference_is_the_search_it_describes(reference, now):
    assert now["args"] == reference["args"], (
        "the generator's ARGS changed: regenerate the reference"
    )


def test_same_seed_gives_the_same_trials(reference, now):
    """Trial numbers, states, sampled params, decoded compression configs, MACs and FLOPs."""
    assert [{k: t[k] for k in STRUCTURE} for t in now["trials"]] == [
        {k: t[k] for k in STRUCTURE} for t in reference["trials"]
    ]
    assert {k: now["base"][k] for k in ("macs", "flops")} == {
        k: reference["base"][k] for k in ("macs", "flops")
    }


def test_same_seed_gives_the_same_accuracy_front_and_knee(reference, now):
    if now["environment"] != reference["environment"]:
        pytest.skip(
            f"exact accuracies need the reference's torch build and CPU kernels "
            f"{reference['environment']}, this is {environment()}"
        )
    assert now["base"]["accuracy"] == reference["base"]["accuracy"]
    assert [(t["number"], t["accuracy"]) for t in now["trials"]] == [
        (t["number"], t["accuracy"]) for t in reference["trials"]
    ]
    assert (now["front"], now["knee"]) == (reference["front"], reference["knee"])
    assert now["test_accuracy"] == reference["test_accuracy"]


def test_the_base_model_is_a_function_of_its_seed(tmp_path, one_torch_thread):
    """Trained from scratch twice after different draws from torch's global generator (torch seeds
    it at random at start-up, so two processes start from different states), the same seed gives
    the same weights: the initial weights are seeded too, not only the training."""
    import torch

    from prunetune.data import create_dataset
    from prunetune.models import Recipe, get_base_model

    bundle, recipe = create_dataset("digits"), Recipe(epochs=1)
    weights = []
    for state in (1, 2):
        torch.manual_seed(state)
        base = get_base_model(
            "tiny_cnn", bundle, recipe=recipe, seed=3, cache_dir=tmp_path / str(state)
        )
        weights.append(base.model.state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_trials_dataframe_of_a_real_search(workdir, now):
    """Every trial of the search as a row: its params, its metrics as the records hold them, the
    front."""
    storage = make_storage(f"sqlite:///{workdir / 'mlruns' / 'optuna.db'}")
    df = trials_dataframe(summarize(optuna.load_study(study_name=STUDY, storage=storage)))
    assert df["number"].tolist() == [t["number"] for t in now["trials"]]
    assert df["accuracy"].tolist() == [t["accuracy"] for t in now["trials"]]
    assert df["flops"].tolist() == [t["flops"] for t in now["trials"]]
    assert df["params_ratio:0"].tolist() == [t["params"]["ratio:0"] for t in now["trials"]]
    assert df.loc[df["front"], "number"].tolist() == now["front"]
    assert df.loc[df["knee"], "number"].tolist() == [now["knee"]]
    assert {"fps", "speedup", "size_bytes", "total_s"} <= set(df.columns)
    assert (df["total_s"] > 0).all() and (df["state"] == "complete").all()
