"""A fresh PostgreSQL schema per test: created, handed out as a store URL, then dropped.

The server comes from ``THRESHOLD_TEST_PG_URL``; when it is unset or unreachable the test is
skipped on a developer's machine and fails in CI (``conftest.require``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

from support import require


def server_url() -> str:
    """The test server's URL, after checking that it answers."""
    url = os.environ.get("THRESHOLD_TEST_PG_URL", "")
    require(bool(url), "THRESHOLD_TEST_PG_URL is not set (scripts/ensure-postgres.sh prints it)")
    try:
        import psycopg
    except ModuleNotFoundError:
        require(False, "psycopg is not installed: pip install 'threshold[postgres]'")
        raise
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        require(False, f"PostgreSQL at {url} is unreachable: {exc}")
    return url


def schema_url(server: str, schema: str) -> str:
    """``server`` with its search_path set to ``schema``."""
    sep = "&" if "?" in server else "?"
    return f"{server}{sep}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def fresh_schema(server: str | None = None) -> Iterator[str]:
    """Yield a store URL on a new, empty schema; drop the schema (and everything in it)
    afterwards."""
    import psycopg

    server = server or server_url()
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema_url(server, schema)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
