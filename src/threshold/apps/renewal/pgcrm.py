"""The CRM tables in a PostgreSQL store's own schema, for workers sharing that store.

Same tables and methods as ``SqliteCrm``; every keyed write is ``ON CONFLICT DO NOTHING``
on its effect key, so a write repeated by a worker that took over a dead one's run lands
once. A lost connection (a database restart) is retried for up to ``retry_seconds``:
repeating a write is safe for the same reason.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg

from threshold.apps.renewal.crm import _PG_SCHEMA, CrmCounts
from threshold.apps.renewal.customers import Customer
from threshold.errors import StoreError

_RETRY_PAUSE_SECONDS = 0.5


class PgCrm:
    """One autocommit connection per process; the agent's effects call it synchronously,
    so calls never interleave on the connection."""

    def __init__(self, url: str, *, retry_seconds: float = 60.0) -> None:
        self.url, self.retry_seconds = url, retry_seconds
        self._conn: psycopg.Connection[Any] | None = None
        for statement in _PG_SCHEMA:
            self._run(statement)

    def _run(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        deadline = time.monotonic() + self.retry_seconds
        while True:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                return self._conn.execute(sql, params)
            except psycopg.OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise StoreError(f"CRM database unreachable: {exc}") from exc
                self._conn = None
                time.sleep(_RETRY_PAUSE_SECONDS)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def upsert_account(self, customer: Customer, status: str, at: str) -> None:
        self._run(
            "INSERT INTO crm_accounts VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (customer_id) "
            "DO UPDATE SET status=excluded.status, updated_at=excluded.updated_at",
            (customer.customer_id, customer.contract, customer.monthly_charges,
             customer.tenure_months, customer.internet_service, status, at))

    def write_signal(self, key: str, customer_id: str, source: str, risk: int, finding: str,
                     at: str) -> bool:
        return self._run("INSERT INTO crm_signals VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT "
                         "DO NOTHING", (key, customer_id, source, risk, finding, at)
                         ).rowcount == 1

    def delete_signal(self, key: str) -> bool:
        return self._run("DELETE FROM crm_signals WHERE effect_key = %s", (key,)).rowcount == 1

    def record_offer(self, key: str, customer_id: str, discount_pct: int, term_months: int,
                     plan: str, message_id: str | None, at: str) -> bool:
        return self._run("INSERT INTO crm_offers VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT "
                         "DO NOTHING", (key, customer_id, discount_pct, term_months, plan,
                                        message_id, at)).rowcount == 1

    def record_contract(self, key: str, customer_id: str, outcome: str, discount_pct: int,
                        term_months: int, monthly_revenue: float, at: str) -> bool:
        return self._run(
            "INSERT INTO crm_contracts VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
            (key, customer_id, outcome, discount_pct, term_months, monthly_revenue,
             at)).rowcount == 1

    def signals_of(self, customer_id: str) -> list[dict[str, Any]]:
        rows = self._run("SELECT source, risk, finding FROM crm_signals WHERE customer_id = %s "
                         "ORDER BY source", (customer_id,)).fetchall()
        return [{"source": s, "risk": r, "finding": f} for s, r, f in rows]

    def max_committed_discount(self) -> int:
        row = self._run("SELECT max(discount_pct) FROM crm_contracts").fetchone()
        return int(row[0] or 0) if row else 0

    def counts(self) -> CrmCounts:
        def one(sql: str) -> Any:
            row = self._run(sql).fetchone()
            return row[0] if row else 0

        return CrmCounts(
            accounts=one("SELECT count(*) FROM crm_accounts"),
            signals=one("SELECT count(*) FROM crm_signals"),
            offers=one("SELECT count(*) FROM crm_offers"),
            contracts=one("SELECT count(*) FROM crm_contracts"),
            retained_monthly_revenue=round(float(one(
                "SELECT coalesce(sum(monthly_revenue), 0) FROM crm_contracts WHERE outcome "
                "IN ('renewed', 'renewed_with_offer', 'restructured')")), 2))

