"""What the PostgreSQL backend adds beyond the store contract: versioned schema checks,
LISTEN/NOTIFY wake-ups, and surviving lost connections without doing a write twice."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from pgschema import fresh_schema, server_url
from threshold.errors import SchemaVersionError, StoreError
from threshold.store import SCHEMA_VERSION, RunRecord, StepRecord, open_store
from threshold.store._pg_schema import POSTGRES_MIGRATIONS
from threshold.store._postgres import PostgresStore
from threshold.store._schema import SQLITE_MIGRATIONS

pytestmark = pytest.mark.postgres

NOW = "2026-01-01T00:00:00.000000+00:00"


def _run(run_id: str) -> RunRecord:
    return RunRecord(run_id, "agent", "1", "ready", {}, 0, NOW, NOW)


def _sql(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


# schema versions -------------------------------------------------------------------------
def test_every_schema_version_has_a_postgres_migration() -> None:
    """Both dialects migrate through the same versions, up to SCHEMA_VERSION."""
    expected = set(range(1, SCHEMA_VERSION + 1))
    assert set(POSTGRES_MIGRATIONS) == set(SQLITE_MIGRATIONS) == expected


def test_older_schema_is_refused_unless_migrating() -> None:
    """A database at an older schema version is refused with SchemaVersionError naming
    both versions, and upgraded when opened with migrate=True."""
    with fresh_schema() as url:
        _sql(url, "CREATE TABLE schema_version (version INTEGER NOT NULL)",
             "INSERT INTO schema_version VALUES (0)")
        with pytest.raises(SchemaVersionError, match=r"version 0.*expects 1.*older"):
            open_store(url)
        asyncio.run(_create_and_close(open_store(url, migrate=True)))
        assert _version(url) == SCHEMA_VERSION


def test_newer_schema_is_refused() -> None:
    """A database written by a newer threshold is refused, with or without migrate."""
    with fresh_schema() as url:
        asyncio.run(_create_and_close(open_store(url)))
        _sql(url, "UPDATE schema_version SET version = 99")
        for migrate in (False, True):
            with pytest.raises(SchemaVersionError, match=r"version 99.*newer"):
                open_store(url, migrate=migrate)


def test_our_tables_without_a_version_are_refused_but_others_are_fine() -> None:
    """A schema holding threshold's tables but no version row is refused; another
    application's tables in the same schema do not stop a fresh store."""
    with fresh_schema() as url:
        _sql(url, "CREATE TABLE runs (run_id TEXT)")
        with pytest.raises(SchemaVersionError):
            open_store(url)
    with fresh_schema() as url:
        _sql(url, "CREATE TABLE invoices (id INTEGER)")
        asyncio.run(_create_and_close(open_store(url)))
        assert _version(url) == SCHEMA_VERSION


def test_workers_opening_a_fresh_database_together_migrate_once() -> None:
    """Eight stores opened at once on an empty schema all succeed: one migrates, the
    others wait for it (an advisory lock) and find the schema current."""
    with fresh_schema() as url:
        errors: list[BaseException] = []

        def open_one() -> None:
            try:
                asyncio.run(open_store(url).close())
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert _version(url) == SCHEMA_VERSION


async def _create_and_close(store: object) -> None:
    assert isinstance(store, PostgresStore)
    assert await store.create_run(_run("r1"))
    await store.close()


def _version(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
    assert row is not None
    return int(row[0])


# LISTEN/NOTIFY ---------------------------------------------------------------------------
def test_wait_for_work_wakes_on_a_ready_run_of_its_own_schema_only() -> None:
    """An idle store wakes as soon as another connection makes a run ready in its schema;
    a run in another schema, or nothing at all, lets the wait time out."""
    with fresh_schema() as url, fresh_schema() as other_url:
        async def go() -> None:
            idle, busy, other = (PostgresStore(url), PostgresStore(url),
                                 PostgresStore(other_url))
            try:
                assert await idle.wait_for_work(5.0) is True  # subscribing: look now
                assert await idle.wait_for_work(0.2) is False  # nothing happened since

                async def later(store: PostgresStore, run_id: str) -> None:
                    await asyncio.sleep(0.3)
                    await store.create_run(_run(run_id))

                task = asyncio.create_task(later(other, "elsewhere"))
                assert await idle.wait_for_work(1.0) is False
                await task
                task = asyncio.create_task(later(busy, "r1"))
                started = time.monotonic()
                assert await idle.wait_for_work(10.0) is True
                assert time.monotonic() - started < 3.0
                await task
            finally:
                for store in (idle, busy, other):
                    await store.close()

        asyncio.run(go())


# lost connections ------------------------------------------------------------------------
class Proxy:
    """A TCP relay to the test server that can lose connections on purpose, in its own
    thread (the store's synchronous schema check must not block it)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.drop_after_commit = False  # one shot: relay a COMMIT, then cut before its answer
        self.dropped = 0
        self.loop = asyncio.new_event_loop()
        self._links: list[asyncio.StreamWriter] = []
        self._server: asyncio.AbstractServer | None = None
        started = threading.Event()
        self.thread = threading.Thread(target=self._main, args=(started,), daemon=True)
        self.thread.start()
        started.wait(5)

    def _main(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(
            asyncio.start_server(self._link, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()

    async def _link(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        self._links += [client_w, server_w]
        muted = False  # set once a COMMIT went up whose reply must never come down

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            nonlocal muted
            try:
                while data := await src.read(65536):
                    cut = up and self.drop_after_commit and b"COMMIT\x00" in data
                    if cut:
                        self.drop_after_commit, muted = False, True
                    if not muted or up:
                        dst.write(data)
                        await dst.drain()
                    if cut:
                        await asyncio.sleep(0.3)  # the server commits; its reply is lost
                        self.dropped += 1
                        client_w.close()
                        server_w.close()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(client_r, server_w, True), pump(server_r, client_w, False))

    def cut_all(self) -> None:
        """Close every relayed connection, as a server restart would."""
        def cut() -> None:
            for writer in self._links:
                writer.close()
            self._links.clear()
        self.loop.call_soon_threadsafe(cut)
        time.sleep(0.2)

    def refuse(self) -> None:
        """Stop accepting connections and cut the open ones: the server is gone."""
        assert self._server is not None
        self.loop.call_soon_threadsafe(self._server.close)
        self.cut_all()

    def close(self) -> None:
        self.refuse()

        async def finish_links() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(finish_links(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@contextmanager
def proxied(url: str) -> Iterator[tuple[Proxy, str]]:
    parts = urlsplit(url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else \
        f"127.0.0.1:{proxy.port}"
    try:
        yield proxy, urlunsplit(parts._replace(netloc=netloc))
    finally:
        proxy.close()


def test_a_lost_commit_reply_is_neither_lost_nor_repeated() -> None:
    """When the connection dies after COMMIT was sent but before its answer arrived, the
    store asks the server whether that transaction committed: a run created that way
    reports 'inserted' and a step written that way is neither lost nor written twice (a
    blind retry would answer 'already there' or raise a duplicate-step error)."""
    server_url()
    with fresh_schema() as url, proxied(url) as (proxy, via):
        async def go() -> None:
            store = PostgresStore(via, retry_seconds=20)
            try:
                await store.create_run(_run("warm"))
                proxy.drop_after_commit = True
                assert await store.create_run(_run("r1")) is True
                step = StepRecord("r1", 1, "step", "lookup", {"rows": 3}, NOW)
                proxy.drop_after_commit = True
                await store.record_step(step)
                assert proxy.dropped == 2
                assert await store.load_steps("r1") == {1: step}
                assert [r.run_id for r in await store.list_runs()] == ["r1", "warm"]
            finally:
                await store.close()

        asyncio.run(go())


def test_cut_connections_are_replaced_transparently() -> None:
    """After every connection is cut (a server restart), the next calls, the notification
    listener included, reconnect and work."""
    with fresh_schema() as url, proxied(url) as (proxy, via):
        async def go() -> None:
            store, writer = PostgresStore(via), PostgresStore(url)
            try:
                await store.create_run(_run("r1"))
                assert await store.wait_for_work(0.1) is True  # subscribes
                proxy.cut_all()
                assert await store.get_run("r1") is not None
                assert await store.create_run(_run("r2")) is True
                assert await store.wait_for_work(0.1) is False  # the listener was cut
                assert await store.wait_for_work(0.1) is True  # subscribes again
                waiting = asyncio.create_task(store.wait_for_work(10.0))
                await asyncio.sleep(0.3)
                await writer.create_run(_run("r3"))
                assert await waiting is True
            finally:
                await store.close()
                await writer.close()

        asyncio.run(go())


def test_a_server_gone_for_longer_than_the_retry_budget_is_a_store_error() -> None:
    """Calls retry while the server is away, then fail with a typed StoreError."""
    with fresh_schema() as url, proxied(url) as (proxy, via):
        async def go() -> None:
            store = PostgresStore(via, retry_seconds=1.0)
            try:
                await store.create_run(_run("r1"))
                proxy.refuse()
                started = time.monotonic()
                with pytest.raises(StoreError, match="unavailable for 1 s"):
                    await store.get_run("r1")
                assert time.monotonic() - started < 5
            finally:
                await store.close()

        asyncio.run(go())
