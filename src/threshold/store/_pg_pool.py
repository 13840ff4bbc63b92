"""PostgreSQL connections for one store: a small lazy pool, one transaction per call, and
retries that survive a server restart without doing a write twice.

Connections are opened on the running event loop when first needed (async connections
belong to one loop). A transaction that fails before ``COMMIT`` because the server went
away is simply run again on a fresh connection; a ``COMMIT`` whose answer was lost is
resolved by asking the server about the transaction id fetched in the ``BEGIN`` round trip,
so a write is never applied twice and never reported lost when it was applied.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection, AsyncCursor

from threshold.errors import StoreError

T = TypeVar("T")
Body = Callable[[AsyncCursor[Any]], Awaitable[T]]


class PgPool:
    """At most ``size`` connections; ``write``/``read`` borrow one for one transaction."""

    def __init__(self, conninfo: str, *, label: str, size: int, retry_seconds: float,
                 integrity_messages: Mapping[str, str]) -> None:
        self._conninfo = conninfo
        self._label = label  # the store URL without its password, for messages
        self._size = size
        self._retry_seconds = retry_seconds
        self._integrity = dict(integrity_messages)
        self._idle: list[AsyncConnection[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self.commits = 0  # write transactions committed: benchmarks count writes with it

    # connections -------------------------------------------------------------------------
    def _bind_loop(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._slots is None:
            # Connections of an earlier event loop cannot be awaited here: drop them.
            for conn in self._idle:
                conn.pgconn.finish()
            self._idle.clear()
            self._loop, self._slots = loop, asyncio.Semaphore(self._size)
        return self._slots

    async def connect(self) -> AsyncConnection[Any]:
        """A new autocommit connection (the pool's, or a listener's)."""
        return await AsyncConnection.connect(self._conninfo, autocommit=True)

    async def _borrow(self) -> AsyncConnection[Any]:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and not conn.broken:
                return conn
        return await self.connect()

    def _give_back(self, conn: AsyncConnection[Any]) -> None:
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if conn.closed or conn.broken or not idle:
            conn.pgconn.finish()
        else:
            self._idle.append(conn)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    # transactions ------------------------------------------------------------------------
    async def write(self, body: Body[T]) -> T:
        """Run ``body`` in one read-committed transaction and commit it. The statements
        are pipelined (sent without waiting for each answer): a body reads results with
        ``fetch*`` (which waits for the answers so far), never with ``rowcount``."""
        return await self._transaction(body, write=True)

    async def read(self, body: Body[T], *, snapshot: bool = False) -> T:
        """Run ``body`` without writing: autocommit statements, or with ``snapshot`` one
        repeatable-read transaction so several statements see one state."""
        return await self._transaction(body, write=False, snapshot=snapshot)

    async def _transaction(self, body: Body[T], *, write: bool, snapshot: bool = False) -> T:
        slots = self._bind_loop()
        started, delay = time.monotonic(), 0.05
        while True:
            async with slots:
                conn: AsyncConnection[Any] | None = None
                xid: str | None = None
                try:
                    conn = await self._borrow()
                    async with conn.cursor() as cur:
                        if write:
                            result, xid = await _pipelined(conn, cur, body)
                        else:
                            if snapshot:
                                await cur.execute(
                                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                            result = await body(cur)
                        if write or snapshot:
                            xid_sent, xid = xid, None
                            try:
                                await cur.execute("COMMIT")
                            except psycopg.OperationalError:
                                xid = xid_sent
                                raise
                    if write:
                        self.commits += 1
                    return result
                except psycopg.OperationalError as exc:
                    failure: Exception = exc
                    if conn is not None and not (conn.broken or conn.closed):
                        await _rollback(conn)  # a deadlock or serialization failure
                    elif xid is not None and await self._committed(xid):
                        self.commits += 1
                        return result
                except psycopg.IntegrityError as exc:
                    if conn is not None:
                        await _rollback(conn)
                    raise StoreError(self._describe(exc)) from exc
                except psycopg.Error as exc:
                    if conn is not None:
                        await _rollback(conn)
                    raise StoreError(f"{self._label}: {type(exc).__name__}: {exc}") from exc
                except BaseException:
                    if conn is not None:
                        await _rollback(conn)
                    raise
                finally:
                    if conn is not None:
                        self._give_back(conn)
            if time.monotonic() - started > self._retry_seconds:
                raise StoreError(f"{self._label}: PostgreSQL unavailable for "
                                 f"{self._retry_seconds:.0f} s: {failure}") from failure
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _committed(self, xid: str) -> bool:
        """Whether a transaction whose COMMIT answer was lost did commit. Waits for the
        server to come back (within the retry budget) to find out."""
        started, delay = time.monotonic(), 0.05
        while True:
            try:
                conn = await self.connect()
                try:
                    cur = await conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,))
                    row = await cur.fetchone()
                finally:
                    await conn.close()
            except psycopg.OperationalError as exc:
                if time.monotonic() - started > self._retry_seconds:
                    raise StoreError(f"{self._label}: cannot learn whether transaction {xid} "
                                     f"committed: {exc}") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            status = None if row is None else row[0]
            if status == "in progress":  # the server has not noticed the dead session yet
                await asyncio.sleep(delay)
                continue
            if status is None:
                raise StoreError(f"{self._label}: transaction {xid} is too old to look up")
            return bool(status == "committed")

    def _describe(self, exc: psycopg.IntegrityError) -> str:
        diag = exc.diag
        known = self._integrity.get(diag.constraint_name or "")
        detail = diag.message_detail or diag.message_primary or str(exc)
        return f"{known} ({detail})" if known else f"{self._label}: {detail}"


async def _pipelined(conn: AsyncConnection[Any], cur: AsyncCursor[Any],
                     body: Body[T]) -> tuple[T, str | None]:
    """BEGIN, the body and the transaction id in one pipeline; the COMMIT stays outside, so
    a lost answer to it can be resolved by that id. The id is the one assigned by the
    body's writes, if any: a transaction that wrote nothing has none, and commits without
    a WAL flush (an idle worker's rounds cost the server no fsync)."""
    async with conn.cursor() as begin, conn.cursor() as xid_cur:
        async with conn.pipeline():
            await begin.execute("BEGIN")
            result = await body(cur)
            await xid_cur.execute("SELECT pg_current_xact_id_if_assigned()::text")
        row = await xid_cur.fetchone()
    return result, None if row is None or row[0] is None else str(row[0])


async def _rollback(conn: AsyncConnection[Any]) -> None:
    if conn.broken or conn.closed:
        return
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        try:
            await conn.execute("ROLLBACK")
        except psycopg.Error:
            conn.pgconn.finish()
