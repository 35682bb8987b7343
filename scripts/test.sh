#!/usr/bin/env bash
# Quickstart, command 2: set up, then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(bash "$root/scripts/setup.sh" | tail -n 1)
cd "$root"
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000 RAY_AUTH_MODE=disabled
exec "$venv/bin/python" -m pytest -q "$@"
