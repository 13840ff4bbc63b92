"""What verify-only replay reads of a journal, and two ways to read it.

``LeanJournal`` holds a run, its steps, and of its crossings only what re-verification
compares: raw outputs, proposal hashes, verdict codes, the definition that decided. It is
built from a loaded ``RunJournal`` (any store, or an imported export), or read straight from
a SQLite file with one narrow query per table, decoding no JSON that replay never compares
(provenance and parsed values are what make a full journal load slow).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

from threshold._json import loads
from threshold.errors import NotFoundError
from threshold.replay._journal import RunJournal
from threshold.store import RunRecord, SQLiteStore, StepRecord, Store

APPROVAL_CHANNEL = "approval"
# (attempt, verifier, accept|reject, code, crossing id), in the order they were written; the
# shape of the row the SQLite reader reads, kept as it is.
VerdictRow = tuple[int, str, str, str | None, str]


@dataclass(slots=True)
class LeanAttempt:
    attempt: int
    kind: str
    at: str
    proposal_hash: str | None
    raw: str | None
    error_kind: str | None
    error_message: str | None
    retry_at: str | None
    input_digest: str | None
    refusal: bool


@dataclass(slots=True)
class LeanCrossing:
    seq: int
    status: str
    boundary_version: str
    action: str
    verifiers: Any  # [[name, version], ...], or its compact JSON text as stored
    crossing_id: str
    attempts: list[LeanAttempt] = field(default_factory=list)
    verdicts: list[VerdictRow] = field(default_factory=list)


@dataclass(slots=True)
class LeanJournal:
    run: RunRecord
    steps: dict[int, StepRecord] = field(default_factory=dict)
    crossings: dict[int, LeanCrossing] = field(default_factory=dict)
    # key -> status, result, error
    effects: dict[str, tuple[str, Any, str | None]] = field(default_factory=dict)
    timers: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # fire_at, guard_key
    # message id -> channel, received_at, consumed_seq
    messages: dict[str, tuple[str, str, int | None]] = field(default_factory=dict)
    # Why only the full engine can replay this run (human decisions, kill switches, ...).
    blocked: str | None = None

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def last_seq(self) -> int:
        return max(max(self.steps, default=0), max(self.crossings, default=0))

    def to_journal(self) -> RunJournal:
        """The run and its steps as a ``RunJournal`` marked ``partial``."""
        return RunJournal(self.run, dict(self.steps), partial=True)


def from_journal(journal: RunJournal) -> LeanJournal:
    lean = LeanJournal(journal.run, journal.steps)
    for seq, c in journal.crossings.items():
        rec = c.crossing
        crossing = LeanCrossing(seq, rec.status, rec.boundary_version, rec.action, rec.verifiers,
                                rec.crossing_id)
        for a in c.attempts:
            prov = a.provenance or {}
            crossing.attempts.append(LeanAttempt(
                a.attempt, a.kind, a.at, a.proposal_hash, a.raw, a.error_kind, a.error_message,
                a.retry_at, prov.get("input_digest"), prov.get("finish_reason") == "refusal"))
        crossing.verdicts = [(v.attempt, v.verifier, v.verdict, v.code, v.crossing_id)
                             for v in c.verdicts]
        lean.crossings[seq] = crossing
    lean.effects = {e.key: (e.status, e.result, e.error) for e in journal.effects}
    lean.timers = {t.timer_id: (t.fire_at, t.guard_key) for t in journal.timers}
    lean.messages = {m.message_id: (m.channel, m.received_at, m.consumed_seq)
                     for m in journal.messages}
    lean.blocked = _blocked(lean.run, bool(journal.approvals),
                            any(e.kind == "kill_switch" for e in journal.events),
                            any(m.channel == APPROVAL_CHANNEL for m in journal.messages))
    return lean


def _blocked(run: RunRecord, approvals: bool, killed: bool, approval_messages: bool) -> str | None:
    if approvals or approval_messages:
        return "the run has human approvals"
    if killed:
        return "a kill switch stopped the run"
    if run.parent_run_id is not None:
        return "a child run (replayed with its parent)"
    return None


def sqlite_path(store: Store) -> str | None:
    """The file behind a SQLite store, or None (memory, PostgreSQL, anything else).

    The store resolved its path when it opened; its URL may be relative to another working
    directory by now, so the resolved one is used."""
    if not isinstance(store, SQLiteStore):
        return None
    path = store.path
    if path == ":memory:" or not Path(path).is_file():
        return None
    return path


def read_sqlite(path: str, run_ids: Sequence[str] | None) -> list[LeanJournal]:
    """Read the lean journals of ``run_ids`` (every run when None, in the store's run order)
    from the SQLite file at ``path``, on a read-only connection of its own."""
    db = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True,
                         isolation_level=None)
    try:
        db.execute("BEGIN")  # one snapshot for every table, while workers may write
        return _read(db, run_ids, path)
    finally:
        db.close()


_RUN_COLS = ("run_id, agent, agent_version, status, input, seed, pins, result, error, "
             "created_at, updated_at, lease_owner, lease_until, parent_run_id")


def _read(db: sqlite3.Connection, run_ids: Sequence[str] | None,
          path: str) -> list[LeanJournal]:
    params: tuple[str, ...] | tuple[()]
    if run_ids is None:
        where, crossing_where, params = "", "", ()
        rows = db.execute(f"SELECT {_RUN_COLS} FROM runs ORDER BY created_at, run_id"
                          ).fetchall()
    else:
        wanted = list(dict.fromkeys(run_ids))
        ids = json.dumps(wanted)
        where = " WHERE run_id IN (SELECT value FROM json_each(?))"
        crossing_where = (" WHERE crossing_id IN (SELECT crossing_id FROM crossings"
                          f"{where})")
        params = (ids,)
        found = {r[0]: r for r in db.execute(f"SELECT {_RUN_COLS} FROM runs{where}", params)}
        missing = [r for r in wanted if r not in found]
        if missing:
            raise NotFoundError(f"no run {', '.join(map(repr, missing))} in sqlite:///{path}")
        rows = [found[r] for r in wanted]
    journals: dict[str, LeanJournal] = {}
    for r in rows:
        run = RunRecord(run_id=r[0], agent=r[1], agent_version=r[2], status=r[3],
                        input=loads(r[4]), seed=r[5], pins=loads(r[6]),
                        result=None if r[7] is None else loads(r[7]), error=r[8],
                        created_at=r[9], updated_at=r[10], lease_owner=r[11],
                        lease_until=r[12], parent_run_id=r[13])
        journals[run.run_id] = LeanJournal(run)
    if not journals:
        return []
    for run_id, seq, kind, name, result, at in db.execute(
            f"SELECT run_id, seq, kind, name, result, at FROM steps{where}", params):
        journal = journals.get(run_id)
        if journal is not None:
            journal.steps[seq] = StepRecord(run_id, seq, kind, name,
                                            None if result is None else loads(result), at)
    by_id: dict[str, LeanCrossing] = {}
    for cid, run_id, seq, status, version, action, verifiers in db.execute(
            "SELECT crossing_id, run_id, seq, status, boundary_version, action, verifiers "
            f"FROM crossings{where}", params):
        journal = journals.get(run_id)
        if journal is not None:
            by_id[cid] = journal.crossings[seq] = LeanCrossing(seq, status, version, action,
                                                               verifiers, cid)
    _read_attempts(db, by_id, crossing_where, params)
    _read_verdicts(db, by_id, crossing_where, params)
    for key, run_id, status, result, error in db.execute(
            f"SELECT key, run_id, status, result, error FROM effects{where}", params):
        journal = journals.get(run_id)
        if journal is not None:
            journal.effects[key] = (status, None if result is None else loads(result), error)
    for timer_id, run_id, fire_at, guard_key in db.execute(
            f"SELECT timer_id, run_id, fire_at, guard_key FROM timers{where}", params):
        journal = journals.get(run_id)
        if journal is not None:
            journal.timers[timer_id] = (fire_at, guard_key)
    approval_messages = set()
    for run_id, message_id, channel, received_at, consumed in db.execute(
            "SELECT run_id, message_id, channel, received_at, consumed_seq "
            f"FROM messages{where}", params):
        journal = journals.get(run_id)
        if journal is not None:
            journal.messages[message_id] = (channel, received_at, consumed)
            if channel == APPROVAL_CHANNEL:
                approval_messages.add(run_id)
    approvals = _run_set(db, f"SELECT DISTINCT run_id FROM approvals{where}", params)
    killed = _run_set(db, "SELECT DISTINCT run_id FROM events WHERE kind = 'kill_switch'"
                      + where.replace(" WHERE", " AND"), params)
    for run_id, journal in journals.items():
        journal.blocked = _blocked(journal.run, run_id in approvals, run_id in killed,
                                   run_id in approval_messages)
    return list(journals.values())


def _read_attempts(db: sqlite3.Connection, by_id: dict[str, LeanCrossing], where: str,
                   params: tuple[str, ...] | tuple[()]) -> None:
    # Of the provenance only two fields matter. Found with str.find in the compact JSON the
    # store writes, they cost a tenth of decoding it (or of json_extract, or of instr). A
    # provenance written otherwise matches nothing, so the run differs and goes to the
    # full engine: never a wrong "clean". Rows come in table order (walking the index in
    # attempt order costs a lookup per row); a crossing's rows out of order are sorted.
    unordered: list[LeanCrossing] = []
    for (cid, attempt, kind, at, phash, raw, error_kind, error_message, retry_at,
         provenance) in db.execute(
            "SELECT crossing_id, attempt, kind, at, proposal_hash, raw, error_kind, "
            f"error_message, retry_at, provenance FROM attempts{where}", params):
        crossing = by_id.get(cid)
        if crossing is None:
            continue
        attempts = crossing.attempts
        if attempts and attempts[-1].attempt > attempt:
            unordered.append(crossing)
        digest, refusal = None, False
        if provenance:
            at_digest = provenance.find(_DIGEST_KEY)
            if at_digest >= 0:
                start = at_digest + len(_DIGEST_KEY)
                digest = provenance[start:start + 16]
            refusal = _REFUSAL in provenance
        attempts.append(LeanAttempt(attempt, kind, at, phash, raw, error_kind, error_message,
                                    retry_at, digest, refusal))
    for crossing in unordered:
        crossing.attempts.sort(key=attrgetter("attempt"))


_DIGEST_KEY = '"input_digest":"'
_REFUSAL = '"finish_reason":"refusal"'


def _read_verdicts(db: sqlite3.Connection, by_id: dict[str, LeanCrossing], where: str,
                   params: tuple[str, ...] | tuple[()]) -> None:
    for row in db.execute(
            f"SELECT attempt, verifier, verdict, code, crossing_id FROM verdicts{where} "
            "ORDER BY rowid", params):
        crossing = by_id.get(row[4])
        if crossing is not None:
            crossing.verdicts.append(row)


def _run_set(db: sqlite3.Connection, sql: str, params: tuple[str, ...] | tuple[()]) -> set[str]:
    return {r[0] for r in db.execute(sql, params) if r[0] is not None}


async def load_lean(store: Store, run_ids: Sequence[str] | None) -> list[LeanJournal]:
    """Lean journals from ``store``: read directly when it is a SQLite file, else through
    the ``Store`` protocol (``load_journals``)."""
    from threshold.replay._journal import load_journals

    path = sqlite_path(store)
    if path is not None:
        try:
            return read_sqlite(path, run_ids)
        except sqlite3.Error:
            pass  # a schema this reader does not know: the protocol path always works
    return [from_journal(j) for j in await load_journals(store, run_ids)]


def lean_all(journals: Iterable[RunJournal]) -> list[LeanJournal]:
    return [from_journal(j) for j in journals]
