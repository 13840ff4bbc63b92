#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 for the tests, and print its URL
# (the value for THRESHOLD_TEST_PG_URL). Starts the local cluster when it is down; on a
# machine without PostgreSQL it installs Debian's package first, and when the test database
# or password-less local access is missing it sets them up. Everything but the URL goes to
# stderr.
set -euo pipefail

URL="postgresql://postgres@127.0.0.1:5432/test"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
as_postgres() { as_root su postgres -s /bin/sh -c "$*"; }

if ! command -v pg_isready >/dev/null 2>&1; then
  echo "ensure-postgres: installing postgresql" >&2
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi

version="$(ls /etc/postgresql | sort -V | tail -n 1)"
if ! pg_isready -q -h 127.0.0.1; then
  echo "ensure-postgres: starting cluster $version/main" >&2
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2
  for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 && break; sleep 0.5; done
  pg_isready -q -h 127.0.0.1 || { echo "ensure-postgres: server did not start" >&2; exit 1; }
fi

if ! psql "$URL" -qAtc "SELECT 1" >/dev/null 2>&1; then
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! as_root grep -q "^host all postgres 127.0.0.1/32 trust" "$hba"; then
    echo "ensure-postgres: trusting local TCP logins of user postgres in $hba" >&2
    as_root sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload >&2
  fi
  if ! as_postgres "psql -qAtc \"SELECT 1 FROM pg_database WHERE datname = 'test'\"" \
      | grep -q 1; then
    echo "ensure-postgres: creating database test" >&2
    as_postgres "createdb test" >&2
  fi
  psql "$URL" -qAtc "SELECT 1" >/dev/null
fi

echo "$URL"
