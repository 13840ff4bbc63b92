"""A stand-in for the external systems a saga writes to: a SQLite file of its own.

Every call is logged in ``calls`` (so a test counts deliveries); ``applied`` keeps one row per
idempotency key (so a redelivery changes nothing); ``failures`` scripts how many more calls
of an action fail (-1: every call). One connection per call, so processes can share it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from threshold import EffectContext


class SinkError(Exception):
    """The external system refused the call."""


class Sink:
    def __init__(self, path: Path) -> None:
        self.path = path
        with self._db() as db:
            db.executescript(
                "CREATE TABLE IF NOT EXISTS calls (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "  action TEXT NOT NULL, key TEXT NOT NULL, outcome TEXT NOT NULL);"
                "CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY, action TEXT NOT NULL,"
                "  call_id INTEGER NOT NULL);"
                "CREATE TABLE IF NOT EXISTS failures (action TEXT PRIMARY KEY, "
                "  remaining INTEGER NOT NULL);")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
            db.execute("PRAGMA journal_mode = WAL")
            yield db

    def fail(self, action: str, times: int) -> None:
        """The next ``times`` calls of ``action`` fail (-1: all of them; 0: none)."""
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO failures VALUES (?, ?)", (action, times))

    def call(self, action: str, key: str) -> dict[str, Any]:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT remaining FROM failures WHERE action=?",
                             (action,)).fetchone()
            failing = row is not None and row[0] != 0
            outcome = "error" if failing else "ok"
            call_id = db.execute("INSERT INTO calls (action, key, outcome) VALUES (?, ?, ?)",
                                 (action, key, outcome)).lastrowid
            if failing and row[0] > 0:
                db.execute("UPDATE failures SET remaining = remaining - 1 WHERE action=?",
                           (action,))
            if not failing:
                db.execute("INSERT OR IGNORE INTO applied VALUES (?, ?, ?)",
                           (key, action, call_id))
            db.execute("COMMIT")
        if failing:
            raise SinkError(f"{action} refused ({key})")
        return {"action": action, "key": key}

    def effect(self, action: str) -> Callable[[EffectContext], Awaitable[Any]]:
        async def perform(e: EffectContext) -> Any:
            return self.call(action, e.key)

        return perform

    def compensation(self, action: str) -> Callable[[Any, EffectContext], Awaitable[Any]]:
        async def undo(result: Any, e: EffectContext) -> Any:
            return self.call(action, e.key)

        return undo

    def calls(self, action: str | None = None) -> list[tuple[str, str, str]]:
        """(action, key, outcome) in call order."""
        with self._db() as db:
            rows = db.execute("SELECT action, key, outcome FROM calls ORDER BY id").fetchall()
        return [r for r in rows if action is None or r[0] == action]

    def applied(self) -> list[str]:
        """The actions applied, in the order they were applied."""
        with self._db() as db:
            return [r[0] for r in db.execute("SELECT action FROM applied ORDER BY call_id")]
