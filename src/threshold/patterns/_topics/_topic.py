"""``Topic``: a durable, append-only, ordered log with offsets 1, 2, 3, ...

Events carry a producer, an event time and free headers. An event produced by an LLM also
carries the model id and version and the prompt id, version and hash of the proposal it
came from (``publish_crossing``), so a consumer's output can be traced to the model that
caused it and a model upgrade shows up as a change of headers, not a silent drift.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from threshold.boundary import Provenance
from threshold.clock import Clock, SystemClock, to_iso
from threshold.errors import ConfigError, NotFoundError, UsageError
from threshold.patterns._topics._scan import (
    DEDUPE_HEADER,
    find_by_dedupe_key,
    last_offset,
    tail,
)
from threshold.runtime import Crossing
from threshold.store import Store, TopicEvent

PROVENANCE_HEADERS = ("model_id", "model_version", "served_model", "prompt_id",
                      "prompt_version", "prompt_hash")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event for ``Topic.publish_many``."""

    payload: Any
    key: str | None = None
    event_time: datetime | str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)


def provenance_headers(provenance: Provenance | Mapping[str, Any], *,
                       producer: str) -> dict[str, Any]:
    """The headers that stamp an LLM-produced event: who produced it, with which model and
    version, from which prompt (id, version, hash)."""
    data = (provenance.model_dump(mode="json") if isinstance(provenance, Provenance)
            else dict(provenance))
    return {"producer": producer, **{k: data.get(k) for k in PROVENANCE_HEADERS}}


class Topic:
    """A named topic in ``store``. ``clock`` stamps event times that are not given."""

    def __init__(self, store: Store, name: str, *, clock: Clock | None = None) -> None:
        if not name or name != name.strip() or any(c.isspace() for c in name):
            raise ConfigError(f"a topic name must be non-empty with no whitespace: {name!r}")
        self.store, self.name = store, name
        self.clock: Clock = clock or SystemClock()

    def __repr__(self) -> str:
        return f"Topic({self.name!r})"

    def _time(self, value: datetime | str | None) -> str:
        if value is None:
            return to_iso(self.clock.now())
        if isinstance(value, str):
            return value
        return to_iso(value)

    async def publish(self, payload: Any, *, key: str | None = None,
                      event_time: datetime | str | None = None, producer: str | None = None,
                      headers: Mapping[str, Any] | None = None, dedupe_key: str | None = None,
                      check_existing: bool = False) -> int:
        """Append one event; return its offset.

        ``dedupe_key`` goes into the headers; with ``check_existing`` the topic is searched
        for it first and the existing offset is returned instead of appending again. Pass
        ``check_existing=effect.performed > 0`` from inside an effect: only a crash between
        an append and its record can leave an event whose publish is not known to be done.
        """
        if check_existing and dedupe_key is not None:
            found = await find_by_dedupe_key(self.store, self.name, dedupe_key)
            if found is not None:
                return found.offset
        all_headers = {"producer": producer, **(headers or {})}
        if dedupe_key is not None:
            all_headers[DEDUPE_HEADER] = dedupe_key
        return await self.store.append_topic(self.name, key=key, payload=payload,
                                             headers=all_headers,
                                             event_time=self._time(event_time),
                                             now=to_iso(self.clock.now()))

    async def publish_many(self, events: Iterable[Outgoing], *,
                           producer: str | None = None) -> list[int]:
        """Append several events, in order; return their offsets. On a store that offers
        ``append_topic_batch`` (SQLite) they are one transaction: the way to append fast.
        Elsewhere each is its own append."""
        now = to_iso(self.clock.now())
        rows = [(e.key, e.payload, {"producer": producer, **e.headers},
                 self._time(e.event_time)) for e in events]
        batch = getattr(self.store, "append_topic_batch", None)
        if batch is not None:
            offsets: list[int] = await batch(self.name, rows, now=now)
            return offsets
        return [await self.store.append_topic(self.name, key=k, payload=p, headers=h,
                                              event_time=t, now=now) for k, p, h, t in rows]

    async def publish_crossing(self, crossing: Crossing[Any], payload: Any = None, *,
                               producer: str, key: str | None = None,
                               event_time: datetime | str | None = None,
                               headers: Mapping[str, Any] | None = None,
                               dedupe_key: str | None = None,
                               check_existing: bool = False) -> int:
        """Publish what a committed crossing decided (``payload`` defaults to its value),
        stamped with the provenance of the exact proposal committed."""
        if not crossing.committed or crossing.value is None:
            raise UsageError(f"crossing {crossing.crossing_id or crossing.boundary} ended "
                             f"{crossing.outcome}: only committed proposals are published")
        provenance = await self._provenance(crossing)
        stamped = {**provenance_headers(provenance, producer=producer),
                   "boundary": crossing.boundary, "crossing_id": crossing.crossing_id,
                   "proposal_hash": crossing.proposal_hash, **(headers or {})}
        body = crossing.value.model_dump(mode="json") if payload is None else payload
        return await self.publish(body, key=key, event_time=event_time, producer=producer,
                                  headers=stamped, dedupe_key=dedupe_key,
                                  check_existing=check_existing)

    async def _provenance(self, crossing: Crossing[Any]) -> dict[str, Any]:
        state = await self.store.load_crossing(crossing.crossing_id)
        if state is None:
            raise NotFoundError(f"no crossing {crossing.crossing_id!r} in {self.store.url}")
        for attempt in reversed(state.attempts):
            if attempt.proposal_hash == crossing.proposal_hash and attempt.provenance:
                return dict(attempt.provenance)
        raise NotFoundError(f"crossing {crossing.crossing_id} has no proposal with hash "
                            f"{crossing.proposal_hash}")

    async def read(self, *, after: int = 0, limit: int = 1000) -> list[TopicEvent]:
        return await self.store.read_topic(self.name, after=after, limit=limit)

    async def last_offset(self) -> int:
        """The offset of the newest event (0: empty)."""
        return await last_offset(self.store, self.name)

    async def tail(self, n: int = 10) -> list[TopicEvent]:
        return await tail(self.store, self.name, n)

    async def find(self, dedupe_key: str) -> TopicEvent | None:
        return await find_by_dedupe_key(self.store, self.name, dedupe_key)
