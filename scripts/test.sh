#!/usr/bin/env bash
# Runs the whole test suite (README's test command calls this through `make test`).
# Services the tests need are started by the tests themselves (Kafka broker, PostgreSQL);
# their one-time installs happen here so a missing one fails loudly instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$(command -v python)}"
export TF_CPP_MIN_LOG_LEVEL=2
[ -x scripts/install_postgres.sh ] && bash scripts/install_postgres.sh >/dev/null
[ -x scripts/install_browser.sh ] && bash scripts/install_browser.sh >/dev/null
# The slowest tests are listed at the end, so a CI run shows where its time goes.
exec python -m pytest -p no:cacheprovider --durations=25 "$@"
