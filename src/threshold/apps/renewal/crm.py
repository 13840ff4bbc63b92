"""The CRM of record: real tables beside the journal, written only through effects.

Every write carries its effect's idempotency key as the primary key, so a write repeated
after a crash (the outbox's one open window) lands once. Compensations delete by that key.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from threshold.apps.renewal.customers import Customer

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS crm_accounts (
        customer_id TEXT PRIMARY KEY, contract TEXT NOT NULL, monthly_charges REAL NOT NULL,
        tenure_months INTEGER NOT NULL, internet_service TEXT NOT NULL, status TEXT NOT NULL,
        updated_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS crm_signals (
        effect_key TEXT PRIMARY KEY, customer_id TEXT NOT NULL, source TEXT NOT NULL,
        risk INTEGER NOT NULL, finding TEXT NOT NULL, at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS crm_offers (
        effect_key TEXT PRIMARY KEY, customer_id TEXT NOT NULL, discount_pct INTEGER NOT NULL,
        term_months INTEGER NOT NULL, plan TEXT NOT NULL, message_id TEXT, at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS crm_contracts (
        effect_key TEXT PRIMARY KEY, customer_id TEXT NOT NULL UNIQUE, outcome TEXT NOT NULL,
        discount_pct INTEGER NOT NULL, term_months INTEGER NOT NULL,
        monthly_revenue REAL NOT NULL, at TEXT NOT NULL)""",
]


_PG_SCHEMA = [statement.replace("REAL", "DOUBLE PRECISION") for statement in _SCHEMA]


@dataclass(frozen=True, slots=True)
class CrmCounts:
    accounts: int
    signals: int
    offers: int
    contracts: int
    retained_monthly_revenue: float


class Crm(Protocol):
    """What the renewal world needs of a CRM (``SqliteCrm``, or ``PgCrm`` on PostgreSQL)."""

    def close(self) -> None: ...
    def upsert_account(self, customer: Customer, status: str, at: str) -> None: ...
    def write_signal(self, key: str, customer_id: str, source: str, risk: int, finding: str,
                     at: str) -> bool: ...
    def delete_signal(self, key: str) -> bool: ...
    def record_offer(self, key: str, customer_id: str, discount_pct: int, term_months: int,
                     plan: str, message_id: str | None, at: str) -> bool: ...
    def record_contract(self, key: str, customer_id: str, outcome: str, discount_pct: int,
                        term_months: int, monthly_revenue: float, at: str) -> bool: ...
    def signals_of(self, customer_id: str) -> list[dict[str, Any]]: ...
    def max_committed_discount(self) -> int: ...
    def counts(self) -> CrmCounts: ...


def crm_for_store(store: object) -> Crm:
    """The CRM beside ``store``: in a PostgreSQL store's schema (reached by its URL, so
    every worker sees the same tables), else as ``SqliteCrm.for_store`` chooses."""
    try:
        from threshold.store._postgres import PostgresStore
    except ModuleNotFoundError:  # no psycopg: no PostgreSQL store either
        return SqliteCrm.for_store(store)
    if isinstance(store, PostgresStore):
        from threshold.apps.renewal.pgcrm import PgCrm

        return PgCrm(store.url)
    return SqliteCrm.for_store(store)


class SqliteCrm:
    """CRM tables in the store's SQLite file (its own connection), or in memory."""

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._owned = True
        self._db.execute("PRAGMA busy_timeout = 30000")
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        for statement in _SCHEMA:
            self._db.execute(statement)

    @classmethod
    def for_store(cls, store: object) -> SqliteCrm:
        """Tables in the store's own SQLite database, on its connection (so CRM writes join
        its transactions); a separate in-memory database for other stores (``crm_for_store``
        puts them in a PostgreSQL store's schema instead)."""
        from threshold.store import SQLiteStore

        crm = cls(":memory:")
        if isinstance(store, SQLiteStore):
            crm._db.close()
            crm._db, crm._owned = store.connection, False
            for statement in _SCHEMA:
                crm._db.execute(statement)
        return crm

    def close(self) -> None:
        if self._owned:
            self._db.close()  # a shared connection belongs to its store


    def upsert_account(self, customer: Customer, status: str, at: str) -> None:
        self._db.execute(
            "INSERT INTO crm_accounts VALUES (?,?,?,?,?,?,?) ON CONFLICT (customer_id) DO "
            "UPDATE SET status=excluded.status, updated_at=excluded.updated_at",
            (customer.customer_id, customer.contract, customer.monthly_charges,
             customer.tenure_months, customer.internet_service, status, at))

    def write_signal(self, key: str, customer_id: str, source: str, risk: int, finding: str,
                     at: str) -> bool:
        return self._db.execute("INSERT OR IGNORE INTO crm_signals VALUES (?,?,?,?,?,?)",
                                (key, customer_id, source, risk, finding, at)).rowcount == 1

    def delete_signal(self, key: str) -> bool:
        return self._db.execute("DELETE FROM crm_signals WHERE effect_key = ?",
                                (key,)).rowcount == 1

    def record_offer(self, key: str, customer_id: str, discount_pct: int, term_months: int,
                     plan: str, message_id: str | None, at: str) -> bool:
        return self._db.execute("INSERT OR IGNORE INTO crm_offers VALUES (?,?,?,?,?,?,?)",
                                (key, customer_id, discount_pct, term_months, plan,
                                 message_id, at)).rowcount == 1

    def record_contract(self, key: str, customer_id: str, outcome: str, discount_pct: int,
                        term_months: int, monthly_revenue: float, at: str) -> bool:
        return self._db.execute(
            "INSERT OR IGNORE INTO crm_contracts VALUES (?,?,?,?,?,?,?)",
            (key, customer_id, outcome, discount_pct, term_months, monthly_revenue,
             at)).rowcount == 1

    def signals_of(self, customer_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT source, risk, finding FROM crm_signals WHERE "
                                "customer_id = ? ORDER BY source", (customer_id,)).fetchall()
        return [{"source": s, "risk": r, "finding": f} for s, r, f in rows]

    def max_committed_discount(self) -> int:
        row = self._db.execute("SELECT max(discount_pct) FROM crm_contracts").fetchone()
        return int(row[0] or 0)

    def counts(self) -> CrmCounts:
        one = self._db.execute
        return CrmCounts(
            accounts=one("SELECT count(*) FROM crm_accounts").fetchone()[0],
            signals=one("SELECT count(*) FROM crm_signals").fetchone()[0],
            offers=one("SELECT count(*) FROM crm_offers").fetchone()[0],
            contracts=one("SELECT count(*) FROM crm_contracts").fetchone()[0],
            retained_monthly_revenue=round(one(
                "SELECT coalesce(sum(monthly_revenue), 0) FROM crm_contracts WHERE outcome "
                "IN ('renewed', 'renewed_with_offer', 'restructured')").fetchone()[0], 2))
