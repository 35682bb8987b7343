"""The cost model of the `targets` strategy: probed once per model, remembered under the home
folder and read back by the next search (its start-up no longer prunes every group again); a
cache file that is corrupt or cannot be written is ignored; another structure gets another key."""

from __future__ import annotations

import json

import pytest
import torch

from prunetune.compress import inventory
from prunetune.models.factory import create_model
from prunetune.spaces.cost_model import FOLDER, CostModel, cache_key, cost_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net(name: str = "mnist_net"):
    torch.manual_seed(0)
    model = create_model(name, in_channels=1, num_classes=10, input_size=(28, 28)).eval()
    example = torch.zeros(1, 1, 28, 28)
    groups = {g.name: (g.channels, g.divisor) for g in inventory(model, example).groups}
    return model, example, groups


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNETUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_a_probed_model_is_stored_and_read_back_instead_of_probed(home):
    model, example, groups = _net()
    probed = cost_model(model, example, groups, 1)
    assert probed == CostModel.probe(model, example, groups, round_to=1)
    (path,) = (home / FOLDER).glob("*.json")
    assert path.stem == cache_key(model, example, groups, 1)
    stored = json.loads(path.read_text())
    stored["total"] = 12345  # what the next search gets comes from this file, not a new probe
    path.write_text(json.dumps(stored))
    assert cost_model(model, example, groups, 1).total == 12345


@pytest.mark.parametrize("content", ["{not json", '{"total": 1}', ""])
def test_a_corrupt_cache_file_is_probed_again_and_replaced(home, content):
    model, example, groups = _net()
    path = home / FOLDER / f"{cache_key(model, example, groups, 1)}.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    fresh = CostModel.probe(model, example, groups, round_to=1)
    assert cost_model(model, example, groups, 1) == fresh
    assert json.loads(path.read_text())["total"] == fresh.total
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_an_unwritable_home_still_gives_the_probe(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("PRUNETUNE_HOME", str(blocker / "home"))  # under a file: cannot exist
    model, example, groups = _net()
    assert cost_model(model, example, groups, 1) == CostModel.probe(
        model, example, groups, round_to=1
    )


def test_the_key_follows_what_the_probe_depends_on(home):
    model, example, groups = _net()
    key = cache_key(model, example, groups, 1)
    assert key == cache_key(*_net(), 1)  # weights do not matter (seeded alike here anyway)
    assert key != cache_key(model, example, groups, 4)  # channel rounding
    other, other_example, other_groups = _net("tiny_cnn")
    assert key != cache_key(other, other_example, other_groups, 1)
    with torch.no_grad():
        model[0].weight.mul_(2)  # another trained state of the same structure: the same key
    assert key == cache_key(model, example, groups, 1)
