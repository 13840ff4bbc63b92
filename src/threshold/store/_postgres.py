"""PostgreSQL backend (the ``postgres`` extra): many worker processes on one database.

Opening checks (or, with ``migrate=True``, upgrades) the schema over one short synchronous
connection, so a wrong schema fails at ``open_store`` exactly as with SQLite; the async
connections the methods use are opened lazily on the running event loop (see ``_pg_pool``).

Concurrency comes from the database, not from hope: due runs and timers are claimed with
``FOR UPDATE SKIP LOCKED`` under leases, primary keys make starts, steps, effects and
messages idempotent, conditional updates make ``cas_record`` and ``decide_approval`` have
one winner, and a row lock serializes a wake against a suspension. Every change that makes
a run ready sends a ``NOTIFY`` (on commit) that ``wait_for_work`` turns into a prompt
wake-up for idle workers. The connection's ``search_path`` picks the schema, so several
stores (or tests) can share one database: ``postgresql://host/db?options=-csearch_path%3Dx``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import AsyncConnection, AsyncCursor

from threshold.errors import StoreError
from threshold.store._pg_pool import PgPool
from threshold.store._pg_rows import qualified, text
from threshold.store._pg_schema import ensure_schema
from threshold.store._records import (
    ApprovalRecord,
    AttemptRecord,
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
    Row,
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
from threshold.store._url import redact_url

Cur = AsyncCursor[Any]
_WAKE_BATCH_SECONDS = 0.01

_INTEGRITY = {
    "steps_pkey": "a step at this position of the run is already recorded; is another "
                  "worker executing this run?",
    "attempts_pkey": "this attempt of the crossing is already recorded",
    "verdicts_pkey": "this verifier's verdict on the attempt is already recorded",
}


class PostgresStore:
    """A ``Store`` on PostgreSQL; see the module docstring."""

    def __init__(self, url: str, *, migrate: bool = False, pool_size: int = 4,
                 retry_seconds: float = 60.0) -> None:
        self.url = url
        schema = ensure_schema(url, migrate)
        # One channel per schema, so stores sharing a database do not wake each other.
        self.channel = "threshold_" + hashlib.sha1(schema.encode()).hexdigest()[:16]
        self._pool = PgPool(url, label=redact_url(url), size=pool_size,
                            retry_seconds=retry_seconds, integrity_messages=_INTEGRITY)
        self._listener: AsyncConnection[Any] | None = None
        self._listener_loop: asyncio.AbstractEventLoop | None = None

    @property
    def write_transactions(self) -> int:
        """Write transactions committed through this store object (for benchmarks)."""
        return self._pool.commits

    # plumbing ----------------------------------------------------------------------------
    async def _notify(self, cur: Cur) -> None:
        """Delivered at commit, folded with duplicates of the same transaction."""
        await cur.execute("SELECT pg_notify(%s, '')", (self.channel,))

    async def wait_for_work(self, timeout: float) -> bool:
        """Block until a run may have become ready (a NOTIFY) or ``timeout`` seconds pass;
        True when there may be work. Optional beyond the ``Store`` protocol: the worker
        loop uses it when present and sleeps otherwise. Notifications sent while nobody
        waits queue on the listening connection, so a wake-up between two waits is not
        lost; a fresh subscription returns True at once, as it may have missed one."""
        try:
            listener = self._listener
            if listener is not None and self._listener_loop is not asyncio.get_running_loop():
                listener.pgconn.finish()  # opened on an earlier event loop
                listener = None
            if listener is None or listener.closed or listener.broken:
                listener = self._listener = await self._pool.connect()
                self._listener_loop = asyncio.get_running_loop()
                await listener.execute(f'LISTEN "{self.channel}"')
                return True
            woken = False
            async for _ in listener.notifies(timeout=max(timeout, 0.0), stop_after=1):
                woken = True
            if woken:
                # A burst (a batch of starts, a fan-out) wakes every idle worker once,
                # not once per run: let it land, then drop the notifications it queued.
                await asyncio.sleep(_WAKE_BATCH_SECONDS)
                async for _ in listener.notifies(timeout=0):
                    pass
            return woken
        except psycopg.Error:
            self._listener = None  # the server went away; the next call reconnects
            await asyncio.sleep(min(max(timeout, 0.0), 1.0))
            return False

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.pgconn.finish()
        self._listener = None
        await self._pool.close()

    # runs --------------------------------------------------------------------------------
    async def create_run(self, run: RunRecord) -> bool:
        async def body(cur: Cur) -> bool:
            await cur.execute(
                f"INSERT INTO runs ({RUN_COLS}) VALUES "
                "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (run_id) DO NOTHING "
                "RETURNING 1",
                (run.run_id, run.agent, run.agent_version, run.status, dump_json(run.input),
                 run.seed, dump_json(run.pins), dump_json(run.result), text(run.error),
                 run.created_at, run.updated_at, run.lease_owner, run.lease_until,
                 run.parent_run_id))
            inserted = await cur.fetchone() is not None
            if inserted and run.status == "ready":
                await self._notify(cur)
            return inserted

        return await self._pool.write(body)

    async def get_run(self, run_id: str) -> RunRecord | None:
        row = await self._one(f"SELECT {RUN_COLS} FROM runs WHERE run_id = %s", (run_id,))
        return None if row is None else run_row(row)

    async def list_runs(
        self, *, status: str | None = None, agent: str | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        sql, params = f"SELECT {RUN_COLS} FROM runs WHERE true", []
        if status is not None:
            sql += " AND status = %s"
            params.append(status)
        if agent is not None:
            sql += " AND agent = %s"
            params.append(agent)
        sql += " ORDER BY created_at, run_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [run_row(r) for r in await self._all(sql, params)]

    async def count_runs(self) -> dict[str, int]:
        return {str(r[0]): int(r[1]) for r in await self._all(
            "SELECT status, count(*) FROM runs GROUP BY status")}

    async def finish_run(
        self, run_id: str, *, status: str, now: str, result: Any = None, error: str | None = None
    ) -> None:
        await self._exec(
            "UPDATE runs SET status=%s, result=%s, error=%s, updated_at=%s, lease_owner=NULL, "
            "lease_until=NULL, wake_pending=false WHERE run_id=%s",
            (status, dump_json(result), text(error), now, run_id))

    async def suspend_run(self, run_id: str, *, owner: str, now: str) -> None:
        async def body(cur: Cur) -> None:
            # The row lock orders this against any wake: one that committed first left
            # wake_pending, and the run goes back to ready instead of sleeping through it.
            await cur.execute(
                "UPDATE runs SET status = CASE WHEN wake_pending THEN 'ready' ELSE 'waiting' "
                "END, wake_pending=false, updated_at=%s, lease_owner=NULL, lease_until=NULL "
                "WHERE run_id=%s AND lease_owner=%s RETURNING status", (now, run_id, owner))
            row = await cur.fetchone()
            if row is not None and row[0] == "ready":
                await self._notify(cur)

        await self._pool.write(body)

    async def set_run_pins(self, run_id: str, pins: dict[str, Any], *, now: str) -> None:
        await self._exec("UPDATE runs SET pins=%s, updated_at=%s WHERE run_id=%s",
                         (dump_json(pins), now, run_id))

    async def migrate_run(self, run_id: str, *, agent_version: str, pins: dict[str, Any],
                          event: EventRecord, now: str) -> bool:
        async def body(cur: Cur) -> bool:
            await cur.execute(
                "UPDATE runs SET agent_version=%s, pins=%s, status='ready', error=NULL, "
                "updated_at=%s WHERE run_id=%s AND status IN ('ready', 'waiting', 'stranded') "
                "RETURNING run_id", (agent_version, dump_json(pins), now, run_id))
            moved = await cur.fetchone() is not None
            if moved:
                await self._append_event(cur, event)
            return moved

        return await self._pool.write(body)

    async def claim_runs(
        self, owner: str, *, now: str, lease_until: str, limit: int, dead_owners: Sequence[str],
        agents: Sequence[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        cols = qualified(RUN_COLS, "r")
        served, served_params = "", []
        if agents is not None:
            served = (" AND (agent, agent_version) IN "
                      "(SELECT * FROM unnest(%s::text[], %s::text[]))")
            served_params = [[name for name, _ in agents], [version for _, version in agents]]

        async def body(cur: Cur) -> list[RunRecord]:
            # SKIP LOCKED: concurrent workers take disjoint runs without waiting on each other.
            await cur.execute(
                "WITH due AS (SELECT run_id FROM runs WHERE (status='ready' OR "
                "(status='running' AND (lease_until < %s OR lease_owner = ANY(%s))))"
                f"{served} ORDER BY updated_at, run_id LIMIT %s FOR UPDATE SKIP LOCKED) "
                "UPDATE runs r SET status='running', lease_owner=%s, lease_until=%s, "
                f"wake_pending=false FROM due WHERE r.run_id = due.run_id RETURNING {cols}",
                (now, list(dead_owners), *served_params, limit, owner, lease_until))
            return [run_row(r) for r in await cur.fetchall()]

        claimed = await self._pool.write(body)
        return sorted(claimed, key=lambda r: (r.updated_at, r.run_id))

    async def lease_owners(self) -> list[str]:
        return [r[0] for r in await self._all(
            "SELECT DISTINCT lease_owner FROM runs WHERE lease_owner IS NOT NULL")]

    async def renew_leases(self, owner: str, *, lease_until: str) -> int:
        async def body(cur: Cur) -> int:
            await cur.execute("WITH renewed AS (UPDATE runs SET lease_until=%s WHERE "
                              "lease_owner=%s RETURNING 1) SELECT count(*) FROM renewed",
                              (lease_until, owner))
            row = await cur.fetchone()
            return 0 if row is None else int(row[0])

        return await self._pool.write(body)

    async def release_run(self, run_id: str, owner: str) -> None:
        async def body(cur: Cur) -> None:
            await cur.execute(
                "UPDATE runs SET status='ready', lease_owner=NULL, lease_until=NULL "
                "WHERE run_id=%s AND lease_owner=%s AND status='running' RETURNING 1",
                (run_id, owner))
            if await cur.fetchone() is not None:
                await self._notify(cur)

        await self._pool.write(body)

    async def _wake(self, cur: Cur, run_ids: Sequence[str], now: str) -> bool:
        """waiting -> ready; a run that is not waiting keeps a wake mark for its suspension.
        Rows are locked in run_id order so concurrent multi-run wakes cannot deadlock."""
        await cur.execute(
            "WITH locked AS (SELECT run_id, status FROM runs WHERE run_id = ANY(%s) "
            "ORDER BY run_id FOR UPDATE) "
            "UPDATE runs r SET status = CASE WHEN l.status='waiting' THEN 'ready' "
            "ELSE r.status END, updated_at = CASE WHEN l.status='waiting' THEN %s "
            "ELSE r.updated_at END, wake_pending = r.wake_pending OR l.status <> 'waiting' "
            "FROM locked l WHERE r.run_id = l.run_id RETURNING l.status = 'waiting'",
            (sorted(set(run_ids)), now))
        woke = any(r[0] for r in await cur.fetchall())
        if woke:
            await self._notify(cur)
        return woke

    async def wake_run(self, run_id: str, *, now: str) -> bool:
        return await self._pool.write(lambda cur: self._wake(cur, [run_id], now))

    # steps -------------------------------------------------------------------------------
    async def load_steps(self, run_id: str) -> dict[int, StepRecord]:
        return {
            r[0]: StepRecord(run_id, r[0], r[1], r[2], load(r[3]), r[4])
            for r in await self._all(
                "SELECT seq, kind, name, result, at FROM steps WHERE run_id=%s ORDER BY seq",
                (run_id,))
        }

    async def journal_head(self, run_id: str) -> tuple[int, int, list[int]]:
        async def body(cur: Cur) -> tuple[int, int, list[int]]:
            # One statement, one snapshot: the head and the open crossings agree.
            await cur.execute(
                "SELECT (SELECT coalesce(max(seq), 0) FROM steps WHERE run_id=%s), "
                "(SELECT count(*) FROM steps WHERE run_id=%s), "
                "ARRAY(SELECT seq FROM crossings WHERE run_id=%s AND status IN "
                "('open', 'escalated') ORDER BY seq)", (run_id, run_id, run_id))
            row = await cur.fetchone()
            if row is None:
                return 0, 0, []
            return int(row[0]), int(row[1]), [int(seq) for seq in row[2]]

        return await self._pool.read(body)

    @staticmethod
    async def _insert_step(cur: Cur, step: StepRecord) -> None:
        await cur.execute("INSERT INTO steps VALUES (%s,%s,%s,%s,%s,%s)",
                          (step.run_id, step.seq, step.kind, step.name, dump_json(step.result),
                           step.at))

    async def record_step(self, step: StepRecord) -> None:
        await self._pool.write(lambda cur: self._insert_step(cur, step))

    # crossings ---------------------------------------------------------------------------
    async def load_crossing(self, crossing_id: str) -> CrossingState | None:
        # Most loads are of a crossing about to begin: one statement finds it absent, with
        # no snapshot transaction to open and close around it.
        if await self._one("SELECT 1 FROM crossings WHERE crossing_id=%s",
                           (crossing_id,)) is None:
            return None

        async def body(cur: Cur) -> CrossingState | None:
            await cur.execute(f"SELECT {CROSSING_COLS} FROM crossings "
                              "WHERE crossing_id=%s", (crossing_id,))
            row = await cur.fetchone()
            if row is None:
                return None
            await cur.execute(f"SELECT {ATTEMPT_COLS} FROM attempts WHERE crossing_id=%s "
                              "ORDER BY attempt", (crossing_id,))
            attempts = [attempt_row(r) for r in await cur.fetchall()]
            await cur.execute(f"SELECT {VERDICT_COLS} FROM verdicts WHERE crossing_id=%s "
                              "ORDER BY attempt, ord", (crossing_id,))
            verdicts = [verdict_row(r) for r in await cur.fetchall()]
            await cur.execute(f"SELECT {EFFECT_COLS} FROM effects WHERE crossing_id=%s",
                              (crossing_id,))
            found = await cur.fetchone()
            effect = None if found is None else effect_row(found)
            return CrossingState(crossing_row(row), attempts, verdicts, effect)

        return await self._pool.read(body, snapshot=True)

    async def _upsert_crossing(self, cur: Cur, c: CrossingRecord) -> None:
        await cur.execute(
            f"INSERT INTO crossings ({CROSSING_COLS}) VALUES "
            "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (crossing_id) DO UPDATE SET status=EXCLUDED.status, "
            "attempts=EXCLUDED.attempts, committed_hash=EXCLUDED.committed_hash, "
            "outcome=EXCLUDED.outcome, ended_at=EXCLUDED.ended_at, reason=EXCLUDED.reason",
            (c.crossing_id, c.run_id, c.seq, c.boundary, c.boundary_version, c.action,
             dump_json(c.verifiers), c.status, c.attempts, c.started_at, c.model_id, c.prompt_id,
             c.prompt_version, c.committed_hash, dump_json(c.outcome), c.ended_at, text(c.reason)))

    async def _insert_verdicts(self, cur: Cur, verdicts: Sequence[VerdictRecord]) -> None:
        if not verdicts:
            return
        await cur.executemany(
            f"INSERT INTO verdicts ({VERDICT_COLS}) VALUES "
            "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            [(v.crossing_id, v.attempt, v.verifier, v.verifier_version, v.verdict,
              v.proposal_hash, v.at, v.code, text(v.message), v.retryable, text(v.hint),
              v.field, v.decided_by) for v in verdicts])

    async def _begin_effect(self, cur: Cur, e: EffectRecord) -> EffectRecord:
        await cur.execute(
            f"INSERT INTO effects ({EFFECT_COLS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
            f"ON CONFLICT (key) DO NOTHING RETURNING {EFFECT_COLS}",
            (e.key, e.run_id, e.action, e.status, e.intent_at, e.crossing_id, e.proposal_hash,
             e.performed, dump_json(e.result), text(e.error), e.done_at))
        row = await cur.fetchone()
        if row is None:  # the key exists: the first intent wins, whoever wrote it
            await cur.execute(f"SELECT {EFFECT_COLS} FROM effects WHERE key=%s", (e.key,))
            row = await cur.fetchone()
            if row is None:
                raise StoreError(f"effect {e.key} vanished while being recorded")
        return effect_row(row)

    async def save_attempt(
        self,
        crossing: CrossingRecord,
        attempt: AttemptRecord,
        verdicts: Sequence[VerdictRecord],
        intent: EffectRecord | None,
    ) -> EffectRecord | None:
        a = attempt

        async def body(cur: Cur) -> EffectRecord | None:
            await self._upsert_crossing(cur, crossing)
            await cur.execute(
                f"INSERT INTO attempts ({ATTEMPT_COLS}) VALUES "
                "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                (a.crossing_id, a.attempt, a.kind, a.at, a.proposal_hash, dump_json(a.raw),
                 dump_json(a.value), dump_json(a.provenance), a.error_kind, text(a.error_message),
                 a.retry_at))
            await self._insert_verdicts(cur, verdicts)
            return None if intent is None else await self._begin_effect(cur, intent)

        return await self._pool.write(body)

    async def save_crossing(self, crossing: CrossingRecord) -> None:
        await self._pool.write(lambda cur: self._upsert_crossing(cur, crossing))

    @staticmethod
    async def _finish_effect(cur: Cur, e: EffectRecord) -> None:
        await cur.execute(
            "UPDATE effects SET status=%s, result=%s, error=%s, done_at=%s, performed=%s "
            "WHERE key=%s", (e.status, dump_json(e.result), text(e.error), e.done_at, e.performed,
                             e.key))

    async def finish_crossing(
        self,
        crossing: CrossingRecord,
        *,
        effect: EffectRecord | None,
        step: StepRecord | None,
        verdicts: Sequence[VerdictRecord] = (),
    ) -> None:
        async def body(cur: Cur) -> None:
            await self._upsert_crossing(cur, crossing)
            await self._insert_verdicts(cur, verdicts)
            if effect is not None:
                await self._finish_effect(cur, effect)
            if step is not None:
                await self._insert_step(cur, step)

        await self._pool.write(body)

    async def _by_run(self, table: str, cols: str, run_id: str | None, order: str) -> list[Row]:
        if run_id is None:
            return await self._all(f"SELECT {cols} FROM {table} ORDER BY {order}")
        if table in ("attempts", "verdicts"):
            return await self._all(
                f"SELECT {cols} FROM {table} WHERE crossing_id IN "
                f"(SELECT crossing_id FROM crossings WHERE run_id=%s) ORDER BY {order}",
                (run_id,))
        return await self._all(f"SELECT {cols} FROM {table} WHERE run_id=%s ORDER BY {order}",
                               (run_id,))

    async def list_crossings(self, run_id: str | None = None) -> list[CrossingRecord]:
        return [crossing_row(r) for r in await self._by_run(
            "crossings", CROSSING_COLS, run_id, "run_id, seq")]

    async def list_attempts(self, run_id: str | None = None) -> list[AttemptRecord]:
        return [attempt_row(r) for r in await self._by_run(
            "attempts", ATTEMPT_COLS, run_id, "crossing_id, attempt")]

    async def list_verdicts(self, run_id: str | None = None) -> list[VerdictRecord]:
        return [verdict_row(r) for r in await self._by_run(
            "verdicts", VERDICT_COLS, run_id, "crossing_id, attempt, ord")]

    # effects -----------------------------------------------------------------------------
    async def begin_effect(self, intent: EffectRecord) -> EffectRecord:
        return await self._pool.write(lambda cur: self._begin_effect(cur, intent))

    async def finish_effect(self, effect: EffectRecord, *, step: StepRecord | None = None) -> None:
        async def body(cur: Cur) -> None:
            await self._finish_effect(cur, effect)
            if step is not None:
                await self._insert_step(cur, step)

        await self._pool.write(body)

    async def get_effect(self, key: str) -> EffectRecord | None:
        row = await self._one(f"SELECT {EFFECT_COLS} FROM effects WHERE key=%s", (key,))
        return None if row is None else effect_row(row)

    async def list_effects(self, run_id: str | None = None) -> list[EffectRecord]:
        return [effect_row(r) for r in await self._by_run(
            "effects", EFFECT_COLS, run_id, "intent_at, key")]

    # timers ------------------------------------------------------------------------------

    async def add_timer(self, timer: TimerRecord) -> None:
        t = timer
        await self._exec(
            f"INSERT INTO timers ({TIMER_COLS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (timer_id) DO NOTHING",
            (t.timer_id, t.run_id, t.fire_at, t.purpose, t.status, t.guard_key, t.guard_version,
             t.fired_at))

    async def get_timer(self, timer_id: str) -> TimerRecord | None:
        row = await self._one(f"SELECT {TIMER_COLS} FROM timers WHERE timer_id=%s",
                              (timer_id,))
        return None if row is None else timer_row(row)

    async def fire_due_timers(self, now: str, *, limit: int = 10_000) -> list[TimerRecord]:
        cols = qualified(TIMER_COLS, "t")
        # A guard names "namespace/key": the timer fires only if that record is still at the
        # version the timer was set at; otherwise it lapses. One statement decides them all.
        guard_ns = "split_part(t.guard_key, '/', 1)"
        guard_key = ("CASE WHEN strpos(t.guard_key, '/') > 0 THEN "
                     "substr(t.guard_key, strpos(t.guard_key, '/') + 1) ELSE '' END")

        async def body(cur: Cur) -> list[TimerRecord]:
            await cur.execute(
                "WITH due AS (SELECT timer_id FROM timers WHERE status='pending' AND "
                "fire_at <= %s ORDER BY fire_at, timer_id LIMIT %s FOR UPDATE SKIP LOCKED) "
                "UPDATE timers t SET fired_at=%s, status = CASE WHEN t.guard_key IS NULL "
                "OR EXISTS (SELECT 1 FROM records r WHERE "
                f"r.namespace = {guard_ns} AND r.key = {guard_key} AND "
                "r.version = t.guard_version) THEN 'fired' ELSE 'lapsed' END "
                f"FROM due WHERE t.timer_id = due.timer_id RETURNING {cols}",
                (now, limit, now))
            fired = sorted((timer_row(r) for r in await cur.fetchall()),
                           key=lambda t: (t.fire_at, t.timer_id))
            if fired:
                # Lapsed timers wake the run too: the waiting code must see the lapse.
                await self._wake(cur, [t.run_id for t in fired], now)
            return fired

        return await self._pool.write(body)

    async def next_timer_at(self) -> str | None:
        row = await self._one("SELECT min(fire_at) FROM timers WHERE status='pending'")
        return None if row is None else row[0]

    async def list_timers(
        self, run_id: str | None = None, status: str | None = None
    ) -> list[TimerRecord]:
        sql, params = f"SELECT {TIMER_COLS} FROM timers WHERE true", []
        if run_id is not None:
            sql += " AND run_id=%s"
            params.append(run_id)
        if status is not None:
            sql += " AND status=%s"
            params.append(status)
        return [timer_row(r) for r in await self._all(sql + " ORDER BY fire_at, timer_id",
                                                         params)]

    async def cancel_timer(self, timer_id: str) -> None:
        await self._exec("UPDATE timers SET status='cancelled' WHERE timer_id=%s AND "
                         "status='pending'", (timer_id,))

    # inbox -------------------------------------------------------------------------------
    async def _deliver(self, cur: Cur, m: MessageRecord, now: str) -> bool:
        await cur.execute(
            f"INSERT INTO messages ({MESSAGE_COLS}) VALUES (%s,%s,%s,%s,%s,NULL) "
            "ON CONFLICT (run_id, message_id) DO NOTHING RETURNING 1",
            (m.run_id, m.message_id, m.channel, dump_json(m.payload), m.received_at))
        new = await cur.fetchone() is not None
        if new:
            await self._wake(cur, [m.run_id], now)
        return new

    async def deliver(self, message: MessageRecord, *, now: str) -> bool:
        return await self._pool.write(lambda cur: self._deliver(cur, message, now))

    async def next_message(self, run_id: str, channel: str) -> MessageRecord | None:
        row = await self._one(
            f"SELECT {MESSAGE_COLS} FROM messages WHERE run_id=%s AND channel=%s AND "
            "consumed_seq IS NULL ORDER BY received_at, ord LIMIT 1", (run_id, channel))
        return None if row is None else message_row(row)

    async def consume_message(self, message: MessageRecord, step: StepRecord) -> None:
        async def body(cur: Cur) -> None:
            await cur.execute("UPDATE messages SET consumed_seq=%s WHERE run_id=%s AND "
                              "message_id=%s", (step.seq, message.run_id, message.message_id))
            await self._insert_step(cur, step)

        await self._pool.write(body)

    async def list_messages(self, run_id: str) -> list[MessageRecord]:
        return [message_row(r) for r in await self._all(
            f"SELECT {MESSAGE_COLS} FROM messages WHERE run_id=%s "
            "ORDER BY received_at, ord", (run_id,))]

    # approvals ---------------------------------------------------------------------------

    async def create_approval(self, approval: ApprovalRecord) -> None:
        a = approval
        await self._exec(
            f"INSERT INTO approvals ({APPROVAL_COLS}) VALUES "
            "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (approval_id) DO NOTHING",
            (a.approval_id, a.run_id, a.crossing_id, a.boundary, a.proposal_hash,
             dump_json(a.value), text(a.reason), a.role, a.created_at, a.status, a.sla_due,
             dump_json(a.fallback), a.decided_by, a.decided_at, text(a.comment)))

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        row = await self._one(f"SELECT {APPROVAL_COLS} FROM approvals "
                              "WHERE approval_id=%s", (approval_id,))
        return None if row is None else approval_row(row)

    async def list_approvals(
        self, *, status: str | None = None, run_id: str | None = None
    ) -> list[ApprovalRecord]:
        sql, params = f"SELECT {APPROVAL_COLS} FROM approvals WHERE true", []
        if status is not None:
            sql += " AND status=%s"
            params.append(status)
        if run_id is not None:
            sql += " AND run_id=%s"
            params.append(run_id)
        return [approval_row(r) for r in await self._all(
            sql + " ORDER BY created_at, approval_id", params)]

    async def decide_approval(
        self, approval: ApprovalRecord, message: MessageRecord, *, now: str
    ) -> bool:
        a = approval

        async def body(cur: Cur) -> bool:
            # "status='pending'" is re-checked on the locked row: one decider wins.
            await cur.execute(
                "UPDATE approvals SET status=%s, decided_by=%s, decided_at=%s, comment=%s, "
                "role=%s, sla_due=%s, value=%s, proposal_hash=%s, fallback=%s "
                "WHERE approval_id=%s AND status='pending' RETURNING 1",
                (a.status, a.decided_by, a.decided_at, text(a.comment), a.role, a.sla_due,
                 dump_json(a.value), a.proposal_hash, dump_json(a.fallback), a.approval_id))
            changed = await cur.fetchone() is not None
            if changed:
                await self._deliver(cur, message, now)
            return changed

        return await self._pool.write(body)

    # journal events ----------------------------------------------------------------------
    @staticmethod
    async def _append_event(cur: Cur, e: EventRecord) -> int:
        await cur.execute("INSERT INTO events (run_id, kind, data, at) VALUES (%s,%s,%s,%s) "
                          "RETURNING event_id", (e.run_id, e.kind, dump_json(e.data), e.at))
        row = await cur.fetchone()
        return 0 if row is None else int(row[0])

    async def append_event(self, event: EventRecord, *, step: StepRecord | None = None) -> int:
        async def body(cur: Cur) -> int:
            if step is not None:
                await self._insert_step(cur, step)
            return await self._append_event(cur, event)

        return await self._pool.write(body)

    async def list_events(
        self, run_id: str | None = None, kind: str | None = None
    ) -> list[EventRecord]:
        sql, params = "SELECT run_id, kind, data, at, event_id FROM events WHERE true", []
        if run_id is not None:
            sql += " AND run_id=%s"
            params.append(run_id)
        if kind is not None:
            sql += " AND kind=%s"
            params.append(kind)
        return [EventRecord(r[0], r[1], load(r[2]), r[3], r[4])
                for r in await self._all(sql + " ORDER BY event_id", params)]

    # versioned records -------------------------------------------------------------------
    async def get_record(self, namespace: str, key: str) -> VersionedRecord | None:
        row = await self._one("SELECT version, value, updated_at FROM records "
                              "WHERE namespace=%s AND key=%s", (namespace, key))
        return None if row is None else VersionedRecord(namespace, key, row[0], load(row[1]),
                                                        row[2])

    async def cas_record(
        self, namespace: str, key: str, *, expected_version: int, value: Any, now: str,
        event: EventRecord | None = None,
    ) -> VersionedRecord | None:
        new_version = expected_version + 1

        async def body(cur: Cur) -> bool:
            if expected_version == 0:
                await cur.execute(
                    "INSERT INTO records VALUES (%s,%s,1,%s,%s) "
                    "ON CONFLICT (namespace, key) DO NOTHING RETURNING 1",
                    (namespace, key, dump_json(value), now))
            else:
                # A concurrent writer holds the row lock; after it commits, the version test
                # is re-evaluated on its row, so exactly one of them succeeds.
                await cur.execute(
                    "UPDATE records SET version=%s, value=%s, updated_at=%s WHERE namespace=%s "
                    "AND key=%s AND version=%s RETURNING 1",
                    (new_version, dump_json(value), now, namespace, key, expected_version))
            won = await cur.fetchone() is not None
            if won and event is not None:
                await self._append_event(cur, event)
            return won

        won = await self._pool.write(body)
        return VersionedRecord(namespace, key, new_version, value, now) if won else None

    async def list_records(self, namespace: str) -> list[VersionedRecord]:
        return [VersionedRecord(namespace, r[0], r[1], load(r[2]), r[3]) for r in await self._all(
            "SELECT key, version, value, updated_at FROM records WHERE namespace=%s ORDER BY key",
            (namespace,))]

    # topics ------------------------------------------------------------------------------
    async def append_topic(
        self, topic: str, *, key: str | None, payload: Any, headers: dict[str, Any],
        event_time: str, now: str,
    ) -> int:
        async def body(cur: Cur) -> int:
            # The head row serializes appenders of one topic until commit, so offsets are
            # gapless and become visible in order.
            await cur.execute(
                "INSERT INTO topic_heads VALUES (%s, 1) ON CONFLICT (topic) DO UPDATE "
                "SET last = topic_heads.last + 1 RETURNING last", (topic,))
            row = await cur.fetchone()
            if row is None:
                raise StoreError(f"topic {topic}: no offset was assigned")
            offset = int(row[0])
            await cur.execute("INSERT INTO topic_events VALUES (%s,%s,%s,%s,%s,%s,%s)",
                              (topic, offset, key, dump_json(payload), dump_json(headers),
                               event_time, now))
            return offset

        return await self._pool.write(body)

    async def read_topic(self, topic: str, *, after: int, limit: int) -> list[TopicEvent]:
        return [TopicEvent(topic, r[0], r[1], load(r[2]), load(r[3]), r[4], r[5])
                for r in await self._all(
                    "SELECT offset_, key, payload, headers, event_time, appended_at FROM "
                    "topic_events WHERE topic=%s AND offset_ > %s ORDER BY offset_ LIMIT %s",
                    (topic, after, limit))]

    async def list_topics(self) -> list[tuple[str, int]]:
        return [(r[0], int(r[1])) for r in await self._all(
            "SELECT topic, last FROM topic_heads ORDER BY topic")]

    # meta --------------------------------------------------------------------------------
    async def get_meta(self, key: str) -> str | None:
        row = await self._one("SELECT value FROM meta WHERE key=%s", (key,))
        return None if row is None else str(row[0])

    async def set_meta(self, key: str, value: str) -> None:
        await self._exec("INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                         "SET value = EXCLUDED.value", (key, value))

    # one-statement helpers ---------------------------------------------------------------
    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async def body(cur: Cur) -> list[Row]:
            await cur.execute(sql, params)
            return await cur.fetchall()

        return await self._pool.read(body)

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        async def body(cur: Cur) -> Row | None:
            await cur.execute(sql, params)
            return await cur.fetchone()

        return await self._pool.read(body)

    async def _exec(self, sql: str, params: Sequence[Any]) -> None:
        async def body(cur: Cur) -> None:
            await cur.execute(sql, params)

        await self._pool.write(body)

