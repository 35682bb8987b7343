"""Study names: one documented pattern (prunetune.names), checked before anything is written, by
every command that takes one; derived names are always valid; store paths never leave the store."""

from __future__ import annotations

import re

import pytest

from prunetune.cli import main
from prunetune.config import SearchSettings
from prunetune.errors import ConfigError, PrunetuneError
from prunetune.names import STUDY_NAME_PATTERN, check_study_name, default_study_name
from prunetune.paths import inside, study_dir
from tests.helpers import FAST

BAD_NAMES = {
    "parent folders": "../../../x",
    "absolute path": "/abs/path",
    "300 characters": "s" * 300,
    "quote": "it's",
    "empty": "",
    "space": "my study",
    "newline": "a\nb",
    "slash": "a/b",
    "dot dot inside": "a..b",
    "leading dot": ".hidden",
    "leading dash": "-rf",
    "backslash": "a\\b",
    "percent": "100%",
}


def _one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_search_refuses_bad_study_names_before_writing(isolated, capsys, name):
    err = _one_line_error(capsys, ["search", *FAST, "--trials", "1", f"--study={name}"])
    assert err.startswith("prunetune: error: study name") and "letters, digits" in err
    assert list(isolated.iterdir()) == [], "a refused name must write nothing"


def test_absolute_study_name_writes_nothing_outside(isolated, capsys):
    target = isolated.parent / f"{isolated.name}-escaped"
    _one_line_error(capsys, ["search", *FAST, "--trials", "1", "--study", str(target)])
    assert not target.exists() and list(isolated.iterdir()) == []


@pytest.mark.parametrize("command", [["pareto"], ["export", "--out", "out"]])
@pytest.mark.parametrize("name", ["../x", "it's", "s" * 300])
def test_pareto_and_export_use_the_same_rule(isolated, capsys, command, name):
    err = _one_line_error(capsys, [*command, f"--study={name}"])
    assert "study name" in err and "letters, digits" in err
    assert list(isolated.iterdir()) == []


def test_config_file_study_key_is_checked(tmp_path):
    (tmp_path / "c.yaml").write_text("study: '../up'\n")
    with pytest.raises(ConfigError, match="study name '../up' is not allowed"):
        SearchSettings.from_sources(tmp_path / "c.yaml")


@pytest.mark.parametrize(
    "name",
    ["s", "mnist_net-mnist5k", "torchvision_resnet18-cifar10", "run.2-b_c", "A" * 100, "0lead"],
)
def test_good_names_pass(name):
    assert check_study_name(name) == name
    assert SearchSettings.from_flat(study=name).study_name == name


@pytest.mark.parametrize(
    "model, dataset, expected",
    [
        ("mnist_net", "mnist5k", "mnist_net-mnist5k"),
        ("torchvision:resnet18", "cifar10", "torchvision_resnet18-cifar10"),
        ("my_pkg.nets:build", "digits", "my_pkg.nets_build-digits"),
    ],
)
def test_default_names_of_ordinary_models_are_unchanged(model, dataset, expected):
    """Existing studies keep resuming under the name they were created with."""
    assert default_study_name(model, dataset) == expected
    assert SearchSettings.from_flat(model=model, dataset=dataset).study_name == expected


def test_derived_names_are_always_valid_and_long_ones_stay_distinct():
    long_a, long_b = "pkg." + "a" * 150 + ":build", "pkg." + "a" * 150 + ":other"
    weird = ["_private.mod:fn", "x" * 300, "a..b:c", "torchvision:../../x"]
    names = [default_study_name(m, "mnist5k") for m in (long_a, long_b, *weird)]
    for n in names:
        assert check_study_name(n) == n and re.fullmatch(STUDY_NAME_PATTERN, n) and ".." not in n
    assert names[0] != names[1] and len(names[0]) == 100


def test_store_paths_stay_under_the_store(isolated):
    assert study_dir("s") == (isolated / "mlruns" / "prunetune" / "s").resolve()
    root = isolated / "store"
    assert inside(root, "a", "b") == (root / "a" / "b").resolve()
    with pytest.raises(PrunetuneError, match="outside"):
        inside(root, "..", "elsewhere")
    with pytest.raises(PrunetuneError, match="outside"):
        inside(root, "/etc")
    (root / "link").parent.mkdir(parents=True)
    (root / "link").symlink_to(isolated.parent)
    with pytest.raises(PrunetuneError, match="outside"):
        inside(root, "link", "weights")
    with pytest.raises(ConfigError, match="study name"):
        study_dir("../x")
