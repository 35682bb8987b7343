"""Property-based: random YAML documents and values fed to the config loader
(SearchSettings.from_sources / read_yaml_mapping) and the space loader (SearchSpace.from_yaml +
check_fits) either load or raise PrunetuneError with a one-line message, never anything else.
Each property also counts the documents that loaded (some with settings of their own): one that
rejected them all would only have tested the error path."""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunetune.compress import inventory
from prunetune.config import FLAT, SearchSettings, read_yaml_mapping
from prunetune.errors import PrunetuneError
from prunetune.models import build_for
from prunetune.names import check_study_name
from prunetune.spaces import SearchSpace

LOADED: collections.Counter[str] = collections.Counter()  # documents accepted, by property
SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FIELDS = list(FLAT)  # the flat keys a config file holds

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["tpe", "ray", "layer", "accuracy", "l2", "s-1", "../x", "it's", "a\nb", ""])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=4)
    ),
    max_leaves=8,
)
plausible = (
    st.floats(min_value=-2, max_value=2)
    | st.integers(min_value=-3, max_value=40)
    | st.lists(
        st.sampled_from([32, 8, 6, 4, 9, "accuracy", "flops", "fps", "l2", "taylor"]), max_size=4
    )
)
# settings in range, so that many documents load and the accepting path is tested too
in_range = {
    "trials": st.integers(1, 500),
    "epochs": st.integers(0, 9),
    "seed": st.integers(0, 2**31),
    "lr": st.floats(1e-6, 1.0),
    "base_lr": st.floats(1e-6, 1.0),
    "subset": st.integers(1, 9999),
    "ratio_max": st.floats(0.5, 0.95),
    "sampler": st.sampled_from(["tpe", "random", "nsga2"]),
    "objectives": st.sampled_from([["accuracy", "flops"], ["accuracy", "fps", "size"]]),
    "bits": st.sampled_from([[32, 8], [8, 4]]),
    "study": st.sampled_from(["s", "net-1.a"]),
}
config_docs = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=8) | st.integers(), values | plausible, max_size=6
) | st.fixed_dictionaries({}, optional=in_range)


@pytest.fixture(scope="module")
def tiny_inventory():
    return inventory(build_for("tiny_cnn", (1, 8, 8), 10), torch.zeros(1, 1, 8, 8))


def _write(data: str | bytes) -> Path:
    path = Path(tempfile.mkdtemp(prefix="prop-")) / "doc.yaml"
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    return path


def _only_one_line_errors(load) -> object | None:
    """load()'s result, or None after a PrunetuneError whose message is one line."""
    try:
        return load()
    except PrunetuneError as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc), repr(str(exc))
        return None


@SETTINGS
@given(doc=config_docs)
def _config_loader_property(doc):
    path = _write(yaml.safe_dump(doc, allow_unicode=True))
    cfg = _only_one_line_errors(lambda: SearchSettings.from_sources(path))
    if cfg is not None:
        assert check_study_name(cfg.study_name) == cfg.study_name
        assert SearchSettings.from_stored(cfg.to_stored()) == cfg
        LOADED["config"] += cfg != SearchSettings()  # loaded with a setting of its own


def test_config_loader_on_random_mappings():
    LOADED["config"] = 0
    _config_loader_property()
    assert LOADED["config"] > 0, "every random config document with settings was rejected"


@SETTINGS
@given(
    data=st.text(max_size=200) | st.binary(max_size=200) | values.map(lambda v: yaml.safe_dump(v))
)
def test_yaml_reader_on_random_documents(data):
    path = _write(data)
    mapping = _only_one_line_errors(lambda: read_yaml_mapping(path, "config"))
    assert mapping is None or isinstance(mapping, dict)
    _only_one_line_errors(lambda: SearchSettings.from_sources(path))


group_names = st.sampled_from(["0", "3", "8", "10", "features.0"]) | st.text(max_size=8)
numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(
    min_value=-(2**70), max_value=2**70
)
groups = st.dictionaries(
    group_names,
    st.dictionaries(
        st.sampled_from(["channels", "macs_share", "ratio", "other"]),
        numbers | st.lists(st.floats(min_value=-0.5, max_value=1.5), max_size=3) | values,
        max_size=3,
    ),
    max_size=3,
)
space_docs = st.fixed_dictionaries(
    {},
    optional={
        "model": values,
        "granularity": st.sampled_from(["layer", "block", "global", "x"]) | values,
        "ratio": st.dictionaries(
            st.sampled_from(["min", "max", "step", "other"]), numbers | values, max_size=3
        )
        | values,
        "round_to": numbers | values,
        "groups": groups | values,
        "bits": st.fixed_dictionaries(
            {},
            optional={
                "choices": st.lists(st.sampled_from([32, 8, 4, 9, 0]), max_size=3) | values,
                "layers": st.lists(group_names, max_size=3) | values,
            },
        ),
        "importance": st.sampled_from(["l2", "l1", "taylor", "nope"])
        | st.lists(st.sampled_from(["l2", "l1"]))
        | values,
    },
) | st.dictionaries(st.text(max_size=8) | st.integers(), values, max_size=3)


@SETTINGS
@given(doc=space_docs)
def _space_loader_property(doc, tiny_inventory):
    path = _write(yaml.safe_dump(doc, allow_unicode=True))

    def load():
        space = SearchSpace.from_yaml(path)
        space.check_fits(tiny_inventory)
        return space

    space = _only_one_line_errors(load)
    if space is not None:
        assert SearchSpace.from_dict(space.to_dict()).fingerprint() == space.fingerprint()
        LOADED["space"] += bool(doc)  # a document with keys of its own


def test_space_loader_on_random_documents(tiny_inventory):
    LOADED["space"] = 0
    _space_loader_property(tiny_inventory=tiny_inventory)
    assert LOADED["space"] > 0, "every random space document with keys was rejected"
