"""SQLite backend (WAL): the embedded default. ``memory://`` is the same code on ``:memory:``.

Calls run on the event loop thread: each is a short local transaction, cheaper than a hop
to a thread pool. ``synchronous=NORMAL`` in WAL mode survives a process crash, which is the
durability the runtime promises; power loss may lose the last transactions.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from threshold.errors import SchemaVersionError, StoreError
from threshold.store._records import (
    ApprovalRecord,
    AttemptRecord,
    AuditRows,
    CrossingRecord,
    CrossingState,
    EffectRecord,
    EventRecord,
    MessageRecord,
    RunRecord,
    StepRecord,
    TimerRecord,
    TopicEvent,
    VerdictRecord,
    VersionedRecord,
)
from threshold.store._rows import (
    APPROVAL_COLS,
    ATTEMPT_COLS,
    CROSSING_COLS,
    EFFECT_COLS,
    MESSAGE_COLS,
    RUN_COLS,
    TIMER_COLS,
    VERDICT_COLS,
    approval_row,
    attempt_row,
    crossing_row,
    dump_json,
    effect_row,
    load,
    message_row,
    run_row,
    timer_row,
    verdict_row,
)
from threshold.store._schema import SCHEMA_VERSION, SQLITE_MIGRATIONS

# WAL pages written between automatic checkpoints (SQLite's default is 1,000). A journal
# write dirties the same few pages again and again, so a longer interval copies each of
# them back to the database file once instead of many times, and fsyncs less often. At
# 16,384 pages (64 MiB of WAL at most) a durable crossing measured ~15 % faster and the
# renewal portfolio ~8 %; a crash loses nothing either way (the WAL is the durable copy).
# The price: the commit that checkpoints stalls its event loop longer, up to ~90 ms
# instead of ~16 ms at 3,000 customers. A checkpointing thread removed the stall but not
# the wall time (the GIL and the second core are busy), so it was left out.
CHECKPOINT_PAGES = 16_384

# A task that keeps writing without awaiting anything else commits at once this many times
# in one loop tick; its next write joins a batch and so waits a tick, letting the rest of
# the loop (lease renewals, other runs) in. About 5 ms of journal writes.
YIELD_AFTER_COMMITS = 64

# The handle of each database file whose group-commit batch is open in this process.
_OPEN_BATCHES: dict[str, SQLiteStore] = {}


def _attempt_row(r: tuple[Any, ...]) -> AttemptRecord:
    return attempt_row(r, raw=lambda stored: stored)  # SQLite keeps model output as text


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _dump(value: Any) -> str | None:
    if value is None:
        return None
    return dump_json(value)


class _Batch:
    """One group-commit transaction: the writers waiting for its COMMIT, and how it ended."""

    __slots__ = ("done", "error", "waiters")

    def __init__(self) -> None:
        self.waiters: list[asyncio.Future[None]] = []
        self.done = False
        self.error: sqlite3.Error | None = None


class SQLiteStore:
    """A ``Store`` on one SQLite file (or ``:memory:``)."""

    def __init__(self, path: str, *, url: str | None = None, migrate: bool = False,
                 group_commit: bool = True, checkpoint_pages: int = CHECKPOINT_PAGES) -> None:
        self.url = url or f"sqlite:///{path}"
        self._group_commit = group_commit
        self._path = path if path == ":memory:" else str(Path(path).resolve())
        self._batch: _Batch | None = None  # the open group-commit transaction
        # The task whose writes committed at once in this loop tick, if any, and how many.
        self._tick_writer: asyncio.Task[Any] | None = None
        self._tick_commits = 0
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 30000")
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA foreign_keys = OFF")
        # A journal of thousands of runs outgrows SQLite's 2 MB default page cache.
        self._db.execute("PRAGMA cache_size = -131072")
        self._db.execute(f"PRAGMA wal_autocheckpoint = {int(checkpoint_pages)}")
        self._ensure_schema(migrate)

    # plumbing ----------------------------------------------------------------------------
    def _ensure_schema(self, migrate: bool) -> None:
        # Committed before the constructor returns: no one awaits a batch opened here, and
        # a caller that blocks its loop next would hold the write lock until it yields.
        with self._tx(group=False) as db:
            has_table = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
            ).fetchone()
            if not has_table:
                others = db.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type='table'"
                ).fetchone()[0]
                if others:
                    raise SchemaVersionError(self.url, 0, SCHEMA_VERSION)
                db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                db.execute("INSERT INTO schema_version VALUES (0)")
                found = 0
                migrate = True
            else:
                found = db.execute("SELECT version FROM schema_version").fetchone()[0]
            if found > SCHEMA_VERSION or (found < SCHEMA_VERSION and not migrate):
                raise SchemaVersionError(self.url, found, SCHEMA_VERSION)
            for version in range(found + 1, SCHEMA_VERSION + 1):
                for statement in SQLITE_MIGRATIONS[version]:
                    db.execute(statement)
                db.execute("UPDATE schema_version SET version = ?", (version,))

    @property
    def path(self) -> str:
        """The database file, resolved when the store opened (or ``:memory:``)."""
        return self._path

    @property
    def connection(self) -> sqlite3.Connection:
        """The store's connection, for application tables that must share its transactions
        (an application table written on another connection would wait on the batch)."""
        return self._db

    @contextmanager
    def _tx(self, *, group: bool = True) -> Iterator[sqlite3.Connection]:
        """One write. Inside an event loop, the writes of the first task to write in a loop
        tick commit at once; other tasks' writes in the same tick share one transaction
        (group commit), and their callers resume from ``_sync`` only after its COMMIT. So a
        run on its own never waits a tick for its commit, and writers that overlap share
        one. A failing write undoes only itself: a write alone in its transaction by
        rolling it back, a write that joined a batch within its own savepoint."""
        db = self._db
        loop = _running_loop()
        other = _OPEN_BATCHES.get(self._path)
        if other is not None and other is not self:
            # Another handle on this file in this process holds the write lock until its
            # tick ends; waiting for it here would block that very tick. Commit it now.
            other._flush()
        if db.in_transaction:  # an open batch, or a write nested in another
            db.execute("SAVEPOINT write")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK TO write")
                db.execute("RELEASE write")
                raise
            db.execute("RELEASE write")
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        batching = loop is not None and group and self._group_commit
        task = asyncio.current_task(loop) if batching else None
        if not batching or (self._tick_writer in (None, task)
                            and self._tick_commits < YIELD_AFTER_COMMITS):
            try:
                db.execute("COMMIT")
            except sqlite3.Error:
                db.execute("ROLLBACK")
                raise
            if loop is not None and batching:
                self._tick_commits += 1
                if self._tick_writer is None:
                    self._tick_writer = task
                    loop.call_soon(self._end_tick)  # queued behind this tick's writers
            return
        assert loop is not None
        # Savepoints cost two statements per write, so the batch opens only once its first
        # write is in: the second writer of the tick, alone in it until others join.
        self._batch = _Batch()
        if self._path != ":memory:":
            _OPEN_BATCHES[self._path] = self
        loop.call_soon(self._flush)

    def _end_tick(self) -> None:
        self._tick_writer, self._tick_commits = None, 0

    async def _sync(self) -> None:
        """Wait until the writes made so far are committed.

        A write is done once its statements ran; only its commit is awaited here. So a task
        cancelled while waiting still sees its write through, as a write with no await in
        it would, and the cancellation is delivered at the task's next await instead."""
        batch = self._batch
        if batch is None:
            return
        loop = asyncio.get_running_loop()
        cancelled = False
        while not batch.done:
            # A plain future, not a shielded one: one allocation per waiter, and a
            # cancelled waiter is simply replaced while the batch is still open.
            waiter: asyncio.Future[None] = loop.create_future()
            batch.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
                task.cancel()
        if batch.error is not None:
            raise StoreError(f"group commit failed: {batch.error}")

    def _flush(self) -> None:
        batch, self._batch = self._batch, None
        # A batch ends the tick's run of commits, also if a stopped loop dropped _end_tick.
        self._tick_writer, self._tick_commits = None, 0
        if batch is None:
            return  # committed early, or the store was closed
        if _OPEN_BATCHES.get(self._path) is self:
            del _OPEN_BATCHES[self._path]
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            batch.error = exc
        batch.done = True
        for waiter in batch.waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._db.execute(sql, params).fetchone()
        return row

    async def close(self) -> None:
        self._flush()
        self._db.close()

    # runs --------------------------------------------------------------------------------
    async def create_run(self, run: RunRecord) -> bool:
        with self._tx() as db:
            cur = db.execute(
                f"INSERT OR IGNORE INTO runs ({RUN_COLS}) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run.run_id, run.agent, run.agent_version, run.status, _dump(run.input),
                 run.seed, _dump(run.pins), _dump(run.result), run.error, run.created_at,
                 run.updated_at, run.lease_owner, run.lease_until, run.parent_run_id),
            )
            _result = cur.rowcount == 1
        await self._sync()
        return _result

    async def get_run(self, run_id: str) -> RunRecord | None:
        row = self._one(f"SELECT {RUN_COLS} FROM runs WHERE run_id = ?", (run_id,))
        return None if row is None else run_row(row)

    async def list_runs(
        self, *, status: str | None = None, agent: str | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        sql, params = f"SELECT {RUN_COLS} FROM runs WHERE 1=1", []
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        if agent is not None:
            sql += " AND agent = ?"
            params.append(agent)
        sql += " ORDER BY created_at, run_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [run_row(r) for r in self._all(sql, params)]

    async def count_runs(self) -> dict[str, int]:
        return {str(r[0]): int(r[1]) for r in self._all(
            "SELECT status, count(*) FROM runs GROUP BY status")}

    async def finish_run(
        self, run_id: str, *, status: str, now: str, result: Any = None, error: str | None = None
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET status=?, result=?, error=?, updated_at=?, lease_owner=NULL, "
                "lease_until=NULL WHERE run_id=?",
                (status, _dump(result), error, now, run_id),
            )
        await self._sync()

    async def suspend_run(self, run_id: str, *, owner: str, now: str) -> None:
        with self._tx() as db:
            # A wake that arrived while the run was executing left a mark in 'wake_pending'.
            db.execute(
                "UPDATE runs SET status = CASE WHEN EXISTS (SELECT 1 FROM meta WHERE key = "
                "'wake:' || runs.run_id) THEN 'ready' ELSE 'waiting' END, updated_at=?, "
                "lease_owner=NULL, lease_until=NULL WHERE run_id=? AND lease_owner=?",
                (now, run_id, owner),
            )
            db.execute("DELETE FROM meta WHERE key = ?", (f"wake:{run_id}",))
        await self._sync()

    async def set_run_pins(self, run_id: str, pins: dict[str, Any], *, now: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET pins=?, updated_at=? WHERE run_id=?",
                       (_dump(pins), now, run_id))
        await self._sync()

    async def migrate_run(self, run_id: str, *, agent_version: str, pins: dict[str, Any],
                          event: EventRecord, now: str) -> bool:
        """Move a run that is not executing to another agent version and pins, ready to
        run again, with the journal event that says who did it; False if it is executing
        or finished (``threshold.replay.migrate_run`` checks compatibility first)."""
        with self._tx() as db:
            moved = db.execute(
                "UPDATE runs SET agent_version=?, pins=?, status='ready', error=NULL, "
                "updated_at=? WHERE run_id=? AND status IN ('ready', 'waiting', 'stranded')",
                (agent_version, _dump(pins), now, run_id)).rowcount == 1
            if moved:
                self._append_event(db, event)
        await self._sync()
        return moved

    async def claim_runs(
        self, owner: str, *, now: str, lease_until: str, limit: int, dead_owners: Sequence[str],
        agents: Sequence[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        dead = list(dead_owners)
        marks = ",".join("?" * len(dead)) or "NULL"
        served, served_params = "", []
        if agents is not None:
            pairs = ",".join("(?,?)" for _ in agents) or "(NULL,NULL)"
            served = f" AND (agent, agent_version) IN (VALUES {pairs})"
            served_params = [part for pair in agents for part in pair]
        with self._tx() as db:
            rows = db.execute(
                f"UPDATE runs SET status='running', lease_owner=?, lease_until=? "
                f"WHERE run_id IN (SELECT run_id FROM runs WHERE (status='ready' OR "
                f"(status='running' AND (lease_until < ? OR lease_owner IN ({marks}))))"
                f"{served} ORDER BY updated_at, run_id LIMIT ?) RETURNING {RUN_COLS}",
                (owner, lease_until, now, *dead, *served_params, limit),
            ).fetchall()
            # A run claimed now starts from a clean slate: older wake marks are consumed.
            for row in rows:
                db.execute("DELETE FROM meta WHERE key = ?", (f"wake:{row[0]}",))
        await self._sync()
        return sorted((run_row(r) for r in rows), key=lambda r: (r.updated_at, r.run_id))

    async def lease_owners(self) -> list[str]:
        return [r[0] for r in self._all(
            "SELECT DISTINCT lease_owner FROM runs WHERE lease_owner IS NOT NULL")]

    async def renew_leases(self, owner: str, *, lease_until: str) -> int:
        with self._tx() as db:
            _result = db.execute("UPDATE runs SET lease_until=? WHERE lease_owner=?",
                              (lease_until, owner)).rowcount
        await self._sync()
        return _result

    async def release_run(self, run_id: str, owner: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET status='ready', lease_owner=NULL, lease_until=NULL "
                       "WHERE run_id=? AND lease_owner=? AND status='running'", (run_id, owner))
        await self._sync()

    def _wake(self, db: sqlite3.Connection, run_id: str, now: str) -> bool:
        woke = db.execute("UPDATE runs SET status='ready', updated_at=? "
                          "WHERE run_id=? AND status='waiting'", (now, run_id)).rowcount == 1
        if not woke:
            # The run is executing: leave a mark so its suspension turns into 'ready'.
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?) ", (f"wake:{run_id}", now))
        return woke

    async def wake_run(self, run_id: str, *, now: str) -> bool:
        with self._tx() as db:
            _result = self._wake(db, run_id, now)
        await self._sync()
        return _result

    # steps -------------------------------------------------------------------------------
    async def load_steps(self, run_id: str) -> dict[int, StepRecord]:
        return {
            r[0]: StepRecord(run_id, r[0], r[1], r[2], load(r[3]), r[4])
            for r in self._all(
                "SELECT seq, kind, name, result, at FROM steps WHERE run_id=? ORDER BY seq",
                (run_id,))
        }

    async def journal_head(self, run_id: str) -> tuple[int, int, list[int]]:
        row = self._one("SELECT max(seq), count(*) FROM steps WHERE run_id=?", (run_id,))
        open_seqs = [r[0] for r in self._all(
            "SELECT seq FROM crossings WHERE crossing_id > ? AND crossing_id < ? AND status IN "
            "('open', 'escalated')", (run_id + "/", run_id + "0"))]
        if row is None or row[0] is None:
            return 0, 0, sorted(open_seqs)
        return int(row[0]), int(row[1]), sorted(open_seqs)

    def _insert_step(self, db: sqlite3.Connection, step: StepRecord) -> None:
        try:
            db.execute("INSERT INTO steps VALUES (?,?,?,?,?,?)",
                       (step.run_id, step.seq, step.kind, step.name, _dump(step.result), step.at))
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"step {step.seq} of run {step.run_id} is already recorded; "
                             "is another worker executing this run?") from exc

    async def record_step(self, step: StepRecord) -> None:
        with self._tx() as db:
            self._insert_step(db, step)
        await self._sync()

    # crossings ---------------------------------------------------------------------------
    async def load_crossing(self, crossing_id: str) -> CrossingState | None:
        row = self._one(f"SELECT {CROSSING_COLS} FROM crossings WHERE crossing_id=?",
                        (crossing_id,))
        if row is None:
            return None
        attempts = [_attempt_row(r) for r in self._all(
            f"SELECT {ATTEMPT_COLS} FROM attempts WHERE crossing_id=? ORDER BY attempt",
            (crossing_id,))]
        verdicts = [verdict_row(r) for r in self._all(
            f"SELECT {VERDICT_COLS} FROM verdicts WHERE crossing_id=? "
            "ORDER BY attempt, rowid", (crossing_id,))]
        crossing = crossing_row(row)
        # effects_run narrows to the run's few effects; crossing_id alone scans them all.
        stored = self._one(f"SELECT {EFFECT_COLS} FROM effects WHERE run_id=? AND "
                           "crossing_id=?", (crossing.run_id, crossing_id))
        effect = None if stored is None else effect_row(stored)
        return CrossingState(crossing, attempts, verdicts, effect)

    def _upsert_crossing(self, db: sqlite3.Connection, c: CrossingRecord) -> None:
        db.execute(
            f"INSERT INTO crossings ({CROSSING_COLS}) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (crossing_id) DO UPDATE SET "
            "status=excluded.status, attempts=excluded.attempts, "
            "committed_hash=excluded.committed_hash, outcome=excluded.outcome, "
            "ended_at=excluded.ended_at, reason=excluded.reason",
            (c.crossing_id, c.run_id, c.seq, c.boundary, c.boundary_version, c.action,
             _dump(c.verifiers), c.status, c.attempts, c.started_at, c.model_id, c.prompt_id,
             c.prompt_version, c.committed_hash, _dump(c.outcome), c.ended_at, c.reason),
        )

    def _insert_verdicts(self, db: sqlite3.Connection, verdicts: Sequence[VerdictRecord]) -> None:
        if not verdicts:
            return
        db.executemany(
            f"INSERT INTO verdicts ({VERDICT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(v.crossing_id, v.attempt, v.verifier, v.verifier_version, v.verdict,
              v.proposal_hash, v.at, v.code, v.message,
              None if v.retryable is None else int(v.retryable), v.hint, v.field, v.decided_by)
             for v in verdicts],
        )

    def _begin_effect(self, db: sqlite3.Connection, e: EffectRecord) -> EffectRecord:
        inserted = db.execute(
            f"INSERT OR IGNORE INTO effects ({EFFECT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (e.key, e.run_id, e.action, e.status, e.intent_at, e.crossing_id, e.proposal_hash,
             e.performed, _dump(e.result), e.error, e.done_at),
        ).rowcount == 1
        if inserted:
            return e
        row = db.execute(f"SELECT {EFFECT_COLS} FROM effects WHERE key=?",
                         (e.key,)).fetchone()
        return effect_row(row)

    async def save_attempt(
        self,
        crossing: CrossingRecord,
        attempt: AttemptRecord,
        verdicts: Sequence[VerdictRecord],
        intent: EffectRecord | None,
    ) -> EffectRecord | None:
        a = attempt
        with self._tx() as db:
            self._upsert_crossing(db, crossing)
            db.execute(
                f"INSERT INTO attempts ({ATTEMPT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (a.crossing_id, a.attempt, a.kind, a.at, a.proposal_hash, a.raw,
                 _dump(a.value), _dump(a.provenance), a.error_kind, a.error_message, a.retry_at),
            )
            self._insert_verdicts(db, verdicts)
            _result = None if intent is None else self._begin_effect(db, intent)
        await self._sync()
        return _result

    async def save_crossing(self, crossing: CrossingRecord) -> None:
        with self._tx() as db:
            self._upsert_crossing(db, crossing)
        await self._sync()

    def _finish_effect(self, db: sqlite3.Connection, e: EffectRecord) -> None:
        db.execute("UPDATE effects SET status=?, result=?, error=?, done_at=?, performed=? "
                   "WHERE key=?", (e.status, _dump(e.result), e.error, e.done_at, e.performed,
                                   e.key))

    async def finish_crossing(
        self,
        crossing: CrossingRecord,
        *,
        effect: EffectRecord | None,
        step: StepRecord | None,
        verdicts: Sequence[VerdictRecord] = (),
    ) -> None:
        c = crossing
        with self._tx() as db:
            # The row exists from the crossing's first attempt: set what an end changes (the
            # upsert's own update), without binding and encoding the rest again.
            if db.execute("UPDATE crossings SET status=?, attempts=?, committed_hash=?, "
                          "outcome=?, ended_at=?, reason=? WHERE crossing_id=?",
                          (c.status, c.attempts, c.committed_hash, _dump(c.outcome),
                           c.ended_at, c.reason, c.crossing_id)).rowcount == 0:
                self._upsert_crossing(db, c)
            self._insert_verdicts(db, verdicts)
            if effect is not None:
                self._finish_effect(db, effect)
            if step is not None:
                self._insert_step(db, step)
        await self._sync()

    def _by_run(self, table: str, cols: str, run_id: str | None, order: str) -> list[
            tuple[Any, ...]]:
        if run_id is None:
            return self._all(f"SELECT {cols} FROM {table} ORDER BY {order}")
        if table in ("attempts", "verdicts", "crossings"):
            # Crossing ids are "<run_id>/<seq>": a primary-key range scan finds a run's rows
            # without a second index to maintain on every write.
            return self._all(
                f"SELECT {cols} FROM {table} WHERE crossing_id > ? AND crossing_id < ? "
                f"ORDER BY {order}", (run_id + "/", run_id + "0"))
        return self._all(f"SELECT {cols} FROM {table} WHERE run_id=? ORDER BY {order}",
                         (run_id,))

    async def list_crossings(self, run_id: str | None = None) -> list[CrossingRecord]:
        return [crossing_row(r) for r in self._by_run(
            "crossings", CROSSING_COLS, run_id, "run_id, seq")]

    async def list_attempts(self, run_id: str | None = None) -> list[AttemptRecord]:
        return [_attempt_row(r) for r in self._by_run(
            "attempts", ATTEMPT_COLS, run_id, "crossing_id, attempt")]

    async def list_verdicts(self, run_id: str | None = None) -> list[VerdictRecord]:
        return [verdict_row(r) for r in self._by_run(
            "verdicts", VERDICT_COLS, run_id, "crossing_id, attempt, rowid")]

    async def audit_rows(self, run_id: str | None = None) -> AuditRows:
        """The columns ``threshold.audit`` reads, in the order ``list_*`` return them: an
        optional capability beside the protocol (whole records cost far more to load).
        Read in one snapshot, so workers committing meanwhile cannot tear a crossing from
        its verdicts or its effect."""
        if self._db.in_transaction:  # an open batch: its own writes are part of the view
            return self._audit_rows(run_id)
        self._db.execute("BEGIN")
        try:
            return self._audit_rows(run_id)
        finally:
            self._db.execute("COMMIT")

    def _audit_rows(self, run_id: str | None) -> AuditRows:
        crossings = self._by_run("crossings", "crossing_id, status, committed_hash, verifiers",
                                 run_id, "run_id, seq")
        verdicts = self._by_run("verdicts", "crossing_id, proposal_hash, verifier, verdict, "
                                "code", run_id, "crossing_id, attempt, rowid")
        attempts = self._by_run("attempts", "kind, error_kind", run_id, "crossing_id, attempt")
        effects = self._by_run("effects", "key, crossing_id, status", run_id, "intent_at, key")
        approvals = self._one("SELECT count(*) FROM approvals") if run_id is None else \
            self._one("SELECT count(*) FROM approvals WHERE run_id=?", (run_id,))
        return AuditRows(crossings, verdicts, attempts, effects,
                         0 if approvals is None else int(approvals[0]))

    # effects -----------------------------------------------------------------------------
    async def begin_effect(self, intent: EffectRecord) -> EffectRecord:
        with self._tx() as db:
            _result = self._begin_effect(db, intent)
        await self._sync()
        return _result

    async def finish_effect(self, effect: EffectRecord, *, step: StepRecord | None = None) -> None:
        with self._tx() as db:
            self._finish_effect(db, effect)
            if step is not None:
                self._insert_step(db, step)
        await self._sync()

    async def get_effect(self, key: str) -> EffectRecord | None:
        row = self._one(f"SELECT {EFFECT_COLS} FROM effects WHERE key=?", (key,))
        return None if row is None else effect_row(row)

    async def list_effects(self, run_id: str | None = None) -> list[EffectRecord]:
        return [effect_row(r) for r in self._by_run("effects", EFFECT_COLS, run_id,
                                                      "intent_at, key")]

    # timers ------------------------------------------------------------------------------
    async def add_timer(self, timer: TimerRecord) -> None:
        t = timer
        with self._tx() as db:
            db.execute(f"INSERT OR IGNORE INTO timers ({TIMER_COLS}) "
                       "VALUES (?,?,?,?,?,?,?,?)",
                       (t.timer_id, t.run_id, t.fire_at, t.purpose, t.status, t.guard_key,
                        t.guard_version, t.fired_at))
        await self._sync()

    async def get_timer(self, timer_id: str) -> TimerRecord | None:
        row = self._one(f"SELECT {TIMER_COLS} FROM timers WHERE timer_id=?", (timer_id,))
        return None if row is None else timer_row(row)

    async def fire_due_timers(self, now: str, *, limit: int = 10_000) -> list[TimerRecord]:
        out: list[TimerRecord] = []
        with self._tx() as db:
            due = [timer_row(r) for r in db.execute(
                f"SELECT {TIMER_COLS} FROM timers WHERE status='pending' AND fire_at <= ? "
                "ORDER BY fire_at, timer_id LIMIT ?", (now, limit)).fetchall()]
            for t in due:
                status = "fired"
                if t.guard_key is not None:
                    namespace, _, key = t.guard_key.partition("/")
                    row = db.execute("SELECT version FROM records WHERE namespace=? AND key=?",
                                     (namespace, key)).fetchone()
                    if row is None or row[0] != t.guard_version:
                        status = "lapsed"
                db.execute("UPDATE timers SET status=?, fired_at=? WHERE timer_id=?",
                           (status, now, t.timer_id))
                # Lapsed timers wake the run too: the waiting code must see the lapse.
                self._wake(db, t.run_id, now)
                out.append(replace(t, status="fired" if status == "fired" else "lapsed",
                                   fired_at=now))
        await self._sync()
        return out

    async def next_timer_at(self) -> str | None:
        row = self._one("SELECT min(fire_at) FROM timers WHERE status='pending'")
        return None if row is None else row[0]

    async def list_timers(
        self, run_id: str | None = None, status: str | None = None
    ) -> list[TimerRecord]:
        sql, params = f"SELECT {TIMER_COLS} FROM timers WHERE 1=1", []
        if run_id is not None:
            sql += " AND run_id=?"
            params.append(run_id)
        if status is not None:
            sql += " AND status=?"
            params.append(status)
        return [timer_row(r) for r in self._all(sql + " ORDER BY fire_at, timer_id", params)]

    async def cancel_timer(self, timer_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE timers SET status='cancelled' WHERE timer_id=? AND "
                       "status='pending'", (timer_id,))
        await self._sync()

    # inbox -------------------------------------------------------------------------------
    def _deliver(self, db: sqlite3.Connection, m: MessageRecord, now: str) -> bool:
        new = db.execute("INSERT OR IGNORE INTO messages VALUES (?,?,?,?,?,?)",
                         (m.run_id, m.message_id, m.channel, _dump(m.payload), m.received_at,
                          None)).rowcount == 1
        if new:
            self._wake(db, m.run_id, now)
        return new

    async def deliver(self, message: MessageRecord, *, now: str) -> bool:
        with self._tx() as db:
            _result = self._deliver(db, message, now)
        await self._sync()
        return _result

    async def next_message(self, run_id: str, channel: str) -> MessageRecord | None:
        row = self._one(f"SELECT {MESSAGE_COLS} FROM messages WHERE run_id=? AND channel=? "
                        "AND consumed_seq IS NULL ORDER BY received_at, rowid LIMIT 1",
                        (run_id, channel))
        return None if row is None else message_row(row)

    async def consume_message(self, message: MessageRecord, step: StepRecord) -> None:
        with self._tx() as db:
            db.execute("UPDATE messages SET consumed_seq=? WHERE run_id=? AND message_id=?",
                       (step.seq, message.run_id, message.message_id))
            self._insert_step(db, step)
        await self._sync()

    async def list_messages(self, run_id: str) -> list[MessageRecord]:
        return [message_row(r) for r in self._all(
            f"SELECT {MESSAGE_COLS} FROM messages WHERE run_id=? ORDER BY received_at, rowid",
            (run_id,))]

    # approvals ---------------------------------------------------------------------------
    async def create_approval(self, approval: ApprovalRecord) -> None:
        a = approval
        with self._tx() as db:
            db.execute(f"INSERT OR IGNORE INTO approvals ({APPROVAL_COLS}) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (a.approval_id, a.run_id, a.crossing_id, a.boundary, a.proposal_hash,
                        _dump(a.value), a.reason, a.role, a.created_at, a.status, a.sla_due,
                        _dump(a.fallback), a.decided_by, a.decided_at, a.comment))
        await self._sync()

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        row = self._one(f"SELECT {APPROVAL_COLS} FROM approvals WHERE approval_id=?",
                        (approval_id,))
        return None if row is None else approval_row(row)

    async def list_approvals(
        self, *, status: str | None = None, run_id: str | None = None
    ) -> list[ApprovalRecord]:
        sql, params = f"SELECT {APPROVAL_COLS} FROM approvals WHERE 1=1", []
        if status is not None:
            sql += " AND status=?"
            params.append(status)
        if run_id is not None:
            sql += " AND run_id=?"
            params.append(run_id)
        return [approval_row(r) for r in self._all(sql + " ORDER BY created_at, approval_id",
                                                      params)]

    async def decide_approval(
        self, approval: ApprovalRecord, message: MessageRecord, *, now: str
    ) -> bool:
        a = approval
        with self._tx() as db:
            changed = db.execute(
                "UPDATE approvals SET status=?, decided_by=?, decided_at=?, comment=?, role=?, "
                "sla_due=?, value=?, proposal_hash=?, fallback=? "
                "WHERE approval_id=? AND status='pending'",
                (a.status, a.decided_by, a.decided_at, a.comment, a.role, a.sla_due,
                 _dump(a.value), a.proposal_hash, _dump(a.fallback), a.approval_id),
            ).rowcount == 1
            if changed:
                self._deliver(db, message, now)
            _result = changed
        await self._sync()
        return _result

    # journal events ----------------------------------------------------------------------
    def _append_event(self, db: sqlite3.Connection, e: EventRecord) -> int:
        cur = db.execute("INSERT INTO events (run_id, kind, data, at) VALUES (?,?,?,?)",
                         (e.run_id, e.kind, _dump(e.data), e.at))
        return int(cur.lastrowid or 0)

    async def append_event(self, event: EventRecord, *, step: StepRecord | None = None) -> int:
        with self._tx() as db:
            if step is not None:
                self._insert_step(db, step)
            _result = self._append_event(db, event)
        await self._sync()
        return _result

    async def list_events(
        self, run_id: str | None = None, kind: str | None = None
    ) -> list[EventRecord]:
        sql, params = "SELECT run_id, kind, data, at, event_id FROM events WHERE 1=1", []
        if run_id is not None:
            sql += " AND run_id=?"
            params.append(run_id)
        if kind is not None:
            sql += " AND kind=?"
            params.append(kind)
        return [EventRecord(r[0], r[1], load(r[2]), r[3], r[4])
                for r in self._all(sql + " ORDER BY event_id", params)]

    # versioned records -------------------------------------------------------------------
    async def get_record(self, namespace: str, key: str) -> VersionedRecord | None:
        row = self._one("SELECT version, value, updated_at FROM records WHERE namespace=? AND "
                        "key=?", (namespace, key))
        return None if row is None else VersionedRecord(namespace, key, row[0], load(row[1]),
                                                        row[2])

    async def cas_record(
        self, namespace: str, key: str, *, expected_version: int, value: Any, now: str,
        event: EventRecord | None = None,
    ) -> VersionedRecord | None:
        new_version = expected_version + 1
        with self._tx() as db:
            if expected_version == 0:
                won = db.execute("INSERT OR IGNORE INTO records VALUES (?,?,?,?,?)",
                                 (namespace, key, 1, _dump(value), now)).rowcount == 1
            else:
                won = db.execute(
                    "UPDATE records SET version=?, value=?, updated_at=? WHERE namespace=? AND "
                    "key=? AND version=?",
                    (new_version, _dump(value), now, namespace, key, expected_version),
                ).rowcount == 1
            if won and event is not None:
                self._append_event(db, event)
        await self._sync()
        return VersionedRecord(namespace, key, new_version, value, now) if won else None

    async def list_records(self, namespace: str) -> list[VersionedRecord]:
        return [VersionedRecord(namespace, r[0], r[1], load(r[2]), r[3]) for r in self._all(
            "SELECT key, version, value, updated_at FROM records WHERE namespace=? ORDER BY key",
            (namespace,))]

    # topics ------------------------------------------------------------------------------
    async def append_topic(
        self, topic: str, *, key: str | None, payload: Any, headers: dict[str, Any],
        event_time: str, now: str,
    ) -> int:
        with self._tx() as db:
            last = db.execute("SELECT max(offset_) FROM topic_events WHERE topic=?",
                              (topic,)).fetchone()[0]
            offset = 1 if last is None else last + 1
            db.execute("INSERT INTO topic_events VALUES (?,?,?,?,?,?,?)",
                       (topic, offset, key, _dump(payload), _dump(headers), event_time, now))
        await self._sync()
        return int(offset)

    async def append_topic_batch(
        self, topic: str, events: Sequence[tuple[str | None, Any, dict[str, Any], str]], *,
        now: str,
    ) -> list[int]:
        """Append ``(key, payload, headers, event_time)`` events in order in one write; their
        offsets. An optional capability beside the protocol's ``append_topic``:
        ``Topic.publish_many`` uses it where a store has it."""
        with self._tx() as db:
            last = db.execute("SELECT max(offset_) FROM topic_events WHERE topic=?",
                              (topic,)).fetchone()[0] or 0
            rows = [(topic, last + i, key, _dump(payload), _dump(headers), event_time, now)
                    for i, (key, payload, headers, event_time) in enumerate(events, 1)]
            db.executemany("INSERT INTO topic_events VALUES (?,?,?,?,?,?,?)", rows)
        await self._sync()
        return [int(row[1]) for row in rows]

    async def read_topic(self, topic: str, *, after: int, limit: int) -> list[TopicEvent]:
        return [TopicEvent(topic, r[0], r[1], load(r[2]), load(r[3]), r[4], r[5])
                for r in self._all(
                    "SELECT offset_, key, payload, headers, event_time, appended_at FROM "
                    "topic_events WHERE topic=? AND offset_ > ? ORDER BY offset_ LIMIT ?",
                    (topic, after, limit))]

    async def list_topics(self) -> list[tuple[str, int]]:
        return [(r[0], r[1]) for r in self._all(
            "SELECT topic, max(offset_) FROM topic_events GROUP BY topic ORDER BY topic")]

    # meta --------------------------------------------------------------------------------
    async def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key=?", (key,))
        return None if row is None else str(row[0])

    async def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        await self._sync()
