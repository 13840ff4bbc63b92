"""Group commit on SQLite: the first write of a loop tick commits at once, the writes after it
in the same tick share a transaction, and a failing write undoes only itself, whether it was
alone in its transaction or had joined a batch."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from threshold.errors import StoreError
from threshold.store import CrossingRecord, StepRecord
from threshold.store._sqlite import YIELD_AFTER_COMMITS, SQLiteStore

AT = "2026-01-01T00:00:00.000000+00:00"


def step(seq: int) -> StepRecord:
    return StepRecord("r", seq, "step", f"s{seq}", {"seq": seq}, AT)


def crossing(seq: int) -> CrossingRecord:
    return CrossingRecord(f"r/{seq}", "r", seq, "offer", "1", "send", [], "committed", 1, AT,
                          "sim", "offer", "1", ended_at=AT)


def durable(path: Path, sql: str) -> list[tuple[object, ...]]:
    """What another connection sees: only committed rows."""
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


async def _writes_in_one_tick(path: Path, failing: int) -> list[BaseException | None]:
    """Three writes in one tick, the one at index ``failing`` bound to fail."""
    store = SQLiteStore(str(path), migrate=True)
    await store.record_step(step(1))
    # Fails on its second statement (step 1 exists), after its crossing row went in.
    bad = store.finish_crossing(crossing(1), effect=None, step=step(1))
    good = [store.record_step(step(2)), store.finish_crossing(crossing(3), effect=None,
                                                              step=step(3))]
    writes = [*good[:failing], bad, *good[failing:]]
    results = await asyncio.gather(*writes, return_exceptions=True)
    await store.close()
    results.insert(0, results.pop(failing))
    return [r if isinstance(r, BaseException) else None for r in results]


@pytest.mark.parametrize("failing", [0, 1, 2],
                         ids=["commits-alone", "would-open-the-batch", "joins-the-batch"])
def test_a_failing_write_undoes_only_itself(tmp_path: Path, failing: int) -> None:
    """The failing write's earlier statement is undone; the other writes of its tick land."""
    path = tmp_path / "j.db"
    bad, *good = asyncio.run(_writes_in_one_tick(path, failing))
    assert isinstance(bad, StoreError)
    assert good == [None, None]
    assert durable(path, "SELECT seq FROM steps ORDER BY seq") == [(1,), (2,), (3,)]
    assert durable(path, "SELECT crossing_id FROM crossings") == [("r/3",)]


def test_writes_of_one_tick_share_one_commit(tmp_path: Path) -> None:
    """The tick's first write commits at once; the writers after it resume only after the
    COMMIT they share, and it holds them all."""
    path = tmp_path / "j.db"

    async def main() -> list[int]:
        store = SQLiteStore(str(path), migrate=True)
        await store.record_step(step(1))  # the schema's own commit is behind us
        commits: list[int] = []
        store.connection.set_trace_callback(
            lambda sql: commits.append(1) if sql == "COMMIT" else None)

        async def write(seq: int) -> int:
            await store.record_step(step(seq))
            return len(durable(path, "SELECT seq FROM steps"))

        seen = await asyncio.gather(*(write(seq) for seq in range(2, 7)))
        await store.close()
        return [len(commits), *seen]

    commits, *seen = asyncio.run(main())
    assert commits == 2
    assert seen == [2, 6, 6, 6, 6]


def test_a_writer_cancelled_during_the_commit_keeps_its_write(tmp_path: Path) -> None:
    """Cancelled while waiting for the COMMIT, a write still lands and returns; the
    cancellation arrives at the writer's next await, so it cannot tear a write in two."""
    path = tmp_path / "j.db"

    async def main() -> list[str]:
        store = SQLiteStore(str(path), migrate=True)
        await store.record_step(step(1))
        reached: list[str] = []

        async def writer() -> None:
            await store.record_step(step(2))
            reached.append("write returned")
            await asyncio.sleep(0)
            reached.append("next await passed")

        first = asyncio.create_task(store.record_step(step(3)))  # commits at once
        task = asyncio.create_task(writer())  # same tick: it waits for the batch's COMMIT
        await asyncio.sleep(0)  # the writer's statements ran; it waits for the COMMIT
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await first
        await store.close()
        return reached

    assert asyncio.run(main()) == ["write returned"]
    assert durable(path, "SELECT seq FROM steps ORDER BY seq") == [(1,), (2,), (3,)]


@pytest.mark.parametrize("checkpoint_pages", [None, 8], ids=["default", "every-8-pages"])
def test_the_wal_is_copied_back_only_every_checkpoint_pages(
        tmp_path: Path, checkpoint_pages: int | None) -> None:
    """Committed writes stay in the WAL until ``checkpoint_pages`` WAL pages accumulate:
    with the default interval, 600 commits never reach the database file; with
    a short one they do. Either way another connection reads every committed row."""
    path = tmp_path / "j.db"

    async def main() -> int:
        store = (SQLiteStore(str(path), migrate=True) if checkpoint_pages is None else
                 SQLiteStore(str(path), migrate=True, checkpoint_pages=checkpoint_pages))
        size_after_schema = path.stat().st_size
        for seq in range(1, 601):
            await store.record_step(step(seq))
        assert durable(path, "SELECT count(*) FROM steps") == [(600,)]
        grown = path.stat().st_size - size_after_schema
        await store.close()
        return grown

    grown = asyncio.run(main())
    if checkpoint_pages is None:
        assert grown == 0
    else:
        assert grown > 0
    assert durable(path, "SELECT count(*) FROM steps") == [(600,)]


def test_a_writer_alone_in_its_tick_commits_at_once(tmp_path: Path) -> None:
    """A run on its own never waits a loop tick for its commit: each of its writes, the
    second of the tick as well, is durable when the call returns, without suspending."""
    path = tmp_path / "j.db"

    async def main() -> list[tuple[object, ...]]:
        store = SQLiteStore(str(path), migrate=True)
        await store.record_step(step(1))
        await asyncio.sleep(0)  # a new tick
        for seq in (2, 3):
            write = store.record_step(step(seq))
            with pytest.raises(StopIteration):  # finished without suspending for a COMMIT
                write.send(None)
        seen = durable(path, "SELECT seq FROM steps ORDER BY seq")
        await store.close()
        return seen

    assert asyncio.run(main()) == [(1,), (2,), (3,)]


def test_opening_a_store_inside_a_loop_leaves_no_write_lock_behind(tmp_path: Path) -> None:
    """The schema check commits before the constructor returns, so a caller that blocks its
    loop right after opening (a spin, a synchronous wait) does not lock other writers out."""
    path = tmp_path / "j.db"

    async def main() -> None:
        store = SQLiteStore(str(path), migrate=True)
        second = SQLiteStore(str(path))  # an open that finds the schema in place
        other = sqlite3.connect(path, isolation_level=None, timeout=0)
        other.execute("BEGIN IMMEDIATE")  # raises "database is locked" if a batch held on
        other.execute("ROLLBACK")
        other.close()
        await second.close()
        await store.close()

    asyncio.run(main())


def test_a_task_that_only_writes_still_lets_the_loop_in(tmp_path: Path) -> None:
    """Writes that commit at once never suspend, so a task doing nothing but journal writes
    would hold the loop for as long as it writes; every YIELD_AFTER_COMMITS-th write of a
    tick waits for a batch instead, and the rest of the loop runs."""
    path = tmp_path / "j.db"
    writes = 3 * YIELD_AFTER_COMMITS + 10

    async def main() -> int:
        store = SQLiteStore(str(path), migrate=True)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        running = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
        for seq in range(1, writes + 1):
            await store.record_step(step(seq))
        during = ticks - before
        running.cancel()
        await store.close()
        return during

    assert asyncio.run(main()) >= writes // (YIELD_AFTER_COMMITS + 1)
    assert durable(path, "SELECT count(*) FROM steps") == [(writes,)]
