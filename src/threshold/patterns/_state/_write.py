"""One compare-and-swap move of a state row, and what it can come back with.

The move and its journal event are one write (``cas_record(..., event=...)``): a row never
moves without its ``state.transition`` (or ``state.override``) event, nor the reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from threshold.boundary import Reject, Verdict
from threshold.clock import Clock, to_iso
from threshold.patterns._state._row import MOVES, OVERRIDE, STALE, TRANSITION, StateRow
from threshold.patterns._topics._scan import DEDUPE_HEADER
from threshold.patterns.topics import Topic
from threshold.store import EventRecord, Store


@dataclass(frozen=True, slots=True)
class Move:
    """What a writer asks for. ``key`` identifies the move across a crash (an effect's
    idempotency key); ``run_id`` is the run that moves the row, if any."""

    to_state: str
    payload: Mapping[str, Any]
    actor: str
    run_id: str | None = None
    key: str | None = None
    reason: str = ""
    crossing_id: str | None = None
    proposal_hash: str | None = None
    override: bool = False


@dataclass(frozen=True, slots=True)
class Stale:
    expected: int
    actual: int


@dataclass(frozen=True, slots=True)
class Illegal:
    from_state: str
    allowed: list[str]


Outcome = StateRow | Stale | Illegal


@dataclass(frozen=True, slots=True)
class Site:
    """The machine as the writer needs it: names, the legality check, the audit topic."""

    machine: str
    namespace: str
    check: Callable[[str, str], Verdict]
    allowed: Callable[[str], frozenset[str]]
    emit_to: str | None


async def write_once(site: Site, store: Store, current: StateRow, expected: int | None,
                     move: Move, clock: Clock) -> Outcome:
    """Move ``current`` to ``move.to_state`` if it is still at ``expected`` (None: at the
    version just read) and the move is legal there."""
    # Was this very move written before a crash hid its record? Only a row that is not
    # where the writer expected it can tell (at the expected version it cannot have moved).
    if move.key is not None and (expected is None or current.version != expected
                                 or current.last_key == move.key):
        applied = await already_applied(site, store, current, move, clock)
        if applied is not None:
            return applied
    expected = current.version if expected is None else expected
    now = to_iso(clock.now())
    if current.version != expected:
        return Stale(expected, current.version)
    if not move.override and isinstance(site.check(current.state, move.to_state), Reject):
        return Illegal(current.state, sorted(site.allowed(current.state)))
    new = StateRow(current.row_id, site.machine, move.to_state, expected + 1,
                   {**current.payload, **move.payload}, current.history_len + 1,
                   move.run_id or current.run_id, move.key, now)
    data = _event_data(site, current, new, move)
    event = EventRecord(new.run_id, OVERRIDE if move.override else TRANSITION, data, now)
    written = await store.cas_record(site.namespace, current.row_id, expected_version=expected,
                                     value=new.value(), now=now, event=event)
    if written is None:
        latest = await store.get_record(site.namespace, current.row_id)
        return Stale(expected, 0 if latest is None else latest.version)
    if site.emit_to is not None:
        await emit(site, store, data, now, clock, check_existing=False)
    return new


async def already_applied(site: Site, store: Store, current: StateRow, move: Move,
                          clock: Clock) -> StateRow | None:
    """The row as this move left it, if the move was written before (a crash between the
    write and its record): the row still carries the key, or the run's journal has it."""
    assert move.key is not None
    found: dict[str, Any] | None = None
    if current.last_key == move.key:
        found = {"version": current.version, "to": current.state}
    elif move.run_id is not None:
        for e in await store.list_events(move.run_id, TRANSITION):
            if e.data.get("key") == move.key and e.data.get("machine") == site.machine:
                found = e.data
                break
    if found is None:
        return None
    if site.emit_to is not None:
        event = await _find_move(store, current, move, site.machine)
        if event is not None:
            await emit(site, store, event.data, event.at, clock, check_existing=True)
    if current.last_key == move.key:
        return current
    return StateRow(current.row_id, site.machine, str(found["to"]), int(found["version"]),
                    dict(current.payload), current.history_len, move.run_id, move.key,
                    current.updated_at)


async def _find_move(store: Store, current: StateRow, move: Move,
                     machine: str) -> EventRecord | None:
    run_id = move.run_id or current.run_id
    for e in await store.list_events(run_id, TRANSITION):
        if e.data.get("key") == move.key and e.data.get("machine") == machine:
            return e
    return None


def _event_data(site: Site, before: StateRow, after: StateRow, move: Move) -> dict[str, Any]:
    data: dict[str, Any] = {
        "machine": site.machine, "row": after.row_id, "from": before.state,
        "to": after.state, "from_version": before.version, "version": after.version,
        "actor": move.actor, "payload": dict(move.payload)}
    optional = {"reason": move.reason or None, "key": move.key, "crossing_id": move.crossing_id,
                "proposal_hash": move.proposal_hash}
    data.update({k: v for k, v in optional.items() if v is not None})
    return data


def dedupe_key(site: Site, row_id: str, version: int) -> str:
    return f"{site.namespace}/{row_id}@{version}"


async def emit(site: Site, store: Store, data: Mapping[str, Any], at: str, clock: Clock, *,
               check_existing: bool) -> int:
    """Publish one move to the machine's audit topic, once per (row, version), stamped
    with the move's time as its event time."""
    assert site.emit_to is not None
    return await Topic(store, site.emit_to, clock=clock).publish(
        dict(data), key=str(data["row"]), event_time=at, producer=f"state:{site.machine}",
        dedupe_key=dedupe_key(site, str(data["row"]), int(data["version"])),
        check_existing=check_existing)


async def published_keys(store: Store, topic: str) -> set[str]:
    """The dedupe keys already on ``topic`` (one pass over it)."""
    keys: set[str] = set()
    after = 0
    while page := await store.read_topic(topic, after=after, limit=1000):
        keys.update(str(e.headers.get(DEDUPE_HEADER)) for e in page)
        after = page[-1].offset
    return keys


async def stale_note(store: Store, site: Site, row_id: str, move: Move, stale: Stale,
                     now: str) -> None:
    """Journal a lost compare-and-swap (the diagnose tool counts these)."""
    await store.append_event(EventRecord(move.run_id, STALE, {
        "machine": site.machine, "row": row_id, "expected": stale.expected,
        "actual": stale.actual, "to": move.to_state, "actor": move.actor}, now))


async def history(site: Site, store: Store, row_id: str,
                  run_id: str | None = None) -> list[EventRecord]:
    """Every move of a row, oldest first (all runs' journals unless ``run_id``)."""
    found = [e for kind in MOVES for e in await store.list_events(run_id, kind)
             if e.data.get("machine") == site.machine and e.data.get("row") == row_id]
    return sorted(found, key=lambda e: (int(e.data.get("version", 0)), e.event_id or 0))
