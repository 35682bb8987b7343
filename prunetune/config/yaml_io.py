"""Bounded reading of the YAML files a user gives (`--config`, `--space`): a mapping or one clear
ConfigError line, never a traceback, an alias bomb or an unbounded parse."""

from __future__ import annotations

from pathlib import Path

import yaml

from prunetune.errors import ConfigError

MAX_YAML_BYTES = 1 << 18  # a config or space file: at most 256 KiB (a big net's space: tens of kB)
MAX_YAML_DEPTH = 32  # nested mappings / lists
MAX_YAML_ALIASES = 100  # `*anchor` references: an alias bomb needs many


def _bounded_yaml(text: str, where: str):
    """yaml.safe_load of `text` after one pass over its parse events (libyaml's, when present)
    checks depth and aliases: an alias bomb or a deeply nested document is a ConfigError before
    anything is built."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    depth = aliases = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(f"{where} is nested deeper than {MAX_YAML_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise ConfigError(
                    f"{where} uses more than {MAX_YAML_ALIASES} YAML aliases "
                    f"(*name): "
                    "refused (an alias bomb expands to gigabytes)"
                )
    return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """A YAML file that must hold a mapping; clear errors for missing or malformed files. Bounded:
    at most MAX_YAML_BYTES, MAX_YAML_DEPTH levels and MAX_YAML_ALIASES aliases (ConfigError)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file {str(p)!r} does not exist")
    if p.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(
            f"{what} file {str(p)!r} is {p.stat().st_size:,} bytes; at most "
            f"{MAX_YAML_BYTES:,} are read"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} file {str(p)!r} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {str(p)!r}: {exc.strerror}") from None
    try:
        data = _bounded_yaml(text, f"{what} file {str(p)!r}")
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{what} file {str(p)!r} is not valid YAML: {first}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a timestamp 2020-02-30
        raise ConfigError(
            f"{what} file {str(p)!r} holds a value YAML cannot build: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{what} file {str(p)!r} is nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} file {str(p)!r} must hold a mapping of keys to values")
    return data
