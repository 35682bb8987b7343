#!/usr/bin/env bash
# Quickstart, command 1: set up, then run the default search (mnist_net on the embedded mnist5k
# data), print the Pareto table and export the selected model to prunetune-out/.
# Extra arguments go to `prunetune search` (e.g. --trials 80).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(bash "$root/scripts/setup.sh" | tail -n 1)
# glibc: keep the big fc1 buffers mapped (2x faster training steps of the base Net, see README)
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000
cd "$root"
"$venv/bin/prunetune" search --export prunetune-out "$@"
echo "MLflow UI: $venv/bin/prunetune ui   (then open http://127.0.0.1:5000)"
