#!/usr/bin/env bash
# Installs everything the tests need (Python extras, Debian's Chromium, a running
# PostgreSQL), then runs ruff, mypy --strict and the whole suite. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

python3 -m pip install -q --disable-pip-version-check -e '.[test]'

# The web console's browser tests drive Debian's Chromium (never a downloaded browser).
if ! command -v chromium >/dev/null 2>&1; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# llama.cpp's server (xllamacpp) needs the system OpenMP runtime.
if ! ldconfig -p 2>/dev/null | grep -q libgomp.so.1; then
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgomp1 >/dev/null
fi

# PostgreSQL for the scale-out tests: start the local cluster if it is down.
if [ -z "${THRESHOLD_TEST_PG_URL:-}" ] && [ -x scripts/ensure-postgres.sh ]; then
  THRESHOLD_TEST_PG_URL="$(bash scripts/ensure-postgres.sh)" || true
fi
export THRESHOLD_TEST_PG_URL="${THRESHOLD_TEST_PG_URL:-}"

ruff check src tests bench
mypy
python3 -m pytest -q "$@"
