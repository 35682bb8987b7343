#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment OUTSIDE the clone and installs prunetune into
# it. The environment is keyed by a hash of pyproject.toml, so a changed dependency list gets a fresh
# one and CI can cache it. Prints the venv path on the last line of stdout.
#   PRUNETUNE_VENV=/path  overrides the location.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
key=$( (cat "$root/pyproject.toml"; python3 --version) | sha256sum | cut -c1-12)
venv=${PRUNETUNE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/prunetune/venv-$key}
if [ ! -f "$venv/.deps-ok" ]; then
    echo "setting up $venv (first time: about 2-3 minutes)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip >&2
    # torch/torchvision pinned where this machine keeps them on disk; other machines take any
    # release satisfying pyproject.toml's ranges.
    "$venv/bin/pip" install -q "$root[dev]" >&2
    "$venv/bin/pip" uninstall -q -y prunetune >&2
    touch "$venv/.deps-ok"
fi
# The package itself is (re)installed editable from THIS clone every time: cheap, no dependencies.
PYTHONWARNINGS=ignore "$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$root" >&2  # quiet: setuptools warns about editable installs every time
echo "$venv"
