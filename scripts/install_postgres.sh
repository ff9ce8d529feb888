#!/usr/bin/env bash
# Install the PostgreSQL server binaries (Debian packages) used by tests/test_store.py.
# No cluster is started here: the tests start a throwaway one with scripts/pg_tmp.sh.
set -euo pipefail
if ! command -v pg_config >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql
fi
ls -d /usr/lib/postgresql/*/bin/initdb
