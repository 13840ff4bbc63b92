"""``open_store(url)``: the backend is a leaf chosen by URL."""

from __future__ import annotations

from threshold.errors import ConfigError, MissingExtraError
from threshold.store._protocol import Store
from threshold.store._sqlite import SQLiteStore


def open_store(url: str, *, migrate: bool = False) -> Store:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db``, ``memory://`` or
    ``postgresql://user@host/db``. A new database is created at the current schema; an
    older one is upgraded only with ``migrate=True``."""
    if url.startswith("sqlite:///"):
        return SQLiteStore(url.removeprefix("sqlite:///"), url=url, migrate=migrate)
    if url in ("memory://", "memory:", "sqlite://", "sqlite:///:memory:"):
        return SQLiteStore(":memory:", url="memory://", migrate=migrate)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from threshold.store._postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("psycopg"):
                raise MissingExtraError("postgres", "psycopg") from exc
            raise
        store: Store = PostgresStore(url, migrate=migrate)
        return store
    raise ConfigError(f"unsupported store URL {url!r}: use sqlite:///PATH, memory:// or "
                      "postgresql://...")
