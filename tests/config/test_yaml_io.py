"""prunetune.config.yaml_io: a YAML file of a mapping, or one ConfigError line naming the file and
what it is (`what`): never a traceback, nor an unbounded parse."""

from __future__ import annotations

import pytest

from prunetune.config import read_yaml_mapping
from prunetune.config.yaml_io import MAX_YAML_ALIASES, MAX_YAML_BYTES
from prunetune.errors import ConfigError


def test_a_mapping_is_read(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("groups: {conv1: [0.0, 0.5]}\nbits: [32, 8]\n")
    assert read_yaml_mapping(f, "space") == {"groups": {"conv1": [0.0, 0.5]}, "bits": [32, 8]}


@pytest.mark.parametrize(
    "content, message",
    [
        (b"- 1\n", "space file '{f}' must hold a mapping"),
        (b"a: [\n", "space file '{f}' is not valid YAML"),
        (b"\xff\xfe", "space file '{f}' is not UTF-8 text"),
        (b"a: 1\n" + b"#" * MAX_YAML_BYTES, "bytes; at most 262,144 are read"),
        (
            b"a: &x [1]\nb: [" + b", ".join([b"*x"] * (MAX_YAML_ALIASES + 1)) + b"]\n",
            "uses more than 100 YAML aliases",
        ),
    ],
    ids=["list", "broken", "binary", "too-big", "aliases"],
)
def test_what_cannot_be_read_is_one_line_naming_the_file(tmp_path, content, message):
    f = tmp_path / "s.yaml"
    f.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        read_yaml_mapping(f, "space")
    assert message.format(f=f) in str(info.value) and "\n" not in str(info.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file .* does not exist"):
        read_yaml_mapping(tmp_path / "nope.yaml", "config")
