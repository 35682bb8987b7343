#!/usr/bin/env bash
# Installs the programs the test suite starts as real services on 127.0.0.1: PostgreSQL's server
# (tests/test_cluster.py runs a private one). Debian/Ubuntu with apt and root; elsewhere it says
# what is missing and the tests that need it are skipped with that reason.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need[*]} (Debian packages) for the service tests" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
else
    echo "not installed: ${need[*]}; the tests that start them are skipped" >&2
fi
