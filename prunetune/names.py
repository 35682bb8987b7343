"""Names that become paths, MLflow experiment / model names and filter strings: one rule for all.

A study name must match STUDY_NAME_PATTERN: 1 to 100 characters, letters, digits, `.`, `_` and
`-`, starting with a letter or digit, never containing `..`. So it is always one harmless path
component (no `/`, no absolute path, no parent folder), fits in a file name with room to spare,
and is safe inside an MLflow filter string (no quotes, no spaces). `default_study_name` turns a
model and dataset into a valid name (unchanged for every zoo, torchvision and ordinary
`package.module:function` model: `torchvision:resnet18` on `mnist5k` is
`torchvision_resnet18-mnist5k`).
"""

from __future__ import annotations

import hashlib
import re

from prunetune.errors import ConfigError

MAX_STUDY_NAME = 100
STUDY_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"
_STUDY_NAME = re.compile(STUDY_NAME_PATTERN)
RULE_TEXT = (
    f"1-{MAX_STUDY_NAME} letters, digits, '.', '_' or '-', starting with a letter or digit, "
    "without '..'"
)


def check_study_name(name: object, what: str = "study name") -> str:
    """Return `name` if it is a valid study name; else raise ConfigError (one line) saying why."""
    if not isinstance(name, str):
        raise ConfigError(f"{what} must be a string, got {name!r}")
    shown = repr(name) if len(name) <= 60 else repr(name[:60]) + f"... ({len(name)} characters)"
    if not name:
        raise ConfigError(f"{what} must not be empty; allowed: {RULE_TEXT}")
    if len(name) > MAX_STUDY_NAME:
        raise ConfigError(f"{what} {shown} is too long; allowed: {RULE_TEXT}")
    if _STUDY_NAME.fullmatch(name) is None or ".." in name:
        raise ConfigError(f"{what} {shown} is not allowed; allowed: {RULE_TEXT}")
    return name


def default_study_name(model: str, dataset: str) -> str:
    """MODEL-DATASET with `:` as `_`, made valid: other characters outside the pattern become `_`,
    runs of dots one `_`, leading `.`/`_`/`-` dropped; too long, it is cut and ends in a hash of
    the full name (so distinct long names stay distinct)."""
    raw = f"{model.replace(':', '_')}-{dataset}"
    name = re.sub(r"\.{2,}", "_", re.sub(r"[^A-Za-z0-9._-]", "_", raw)).lstrip("._-") or "study"
    if len(name) > MAX_STUDY_NAME:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        name = f"{name[: MAX_STUDY_NAME - 9].rstrip('.')}-{digest}"
    return name
