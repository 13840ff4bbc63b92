"""``Consumer``: at-least-once processing of a topic with a durable offset.

One batch is: read up to ``batch_size`` events after the committed offset, hand each to
the handler, then commit the new offset (with the consumer's state, watermark and lease)
by compare-and-swap on ``offsets/<topic>/<consumer>``. A crash anywhere before the commit
redelivers the whole batch; the handler's effects are keyed per event, so the redelivery
returns their recorded results instead of performing them again. ``batch_size=1`` commits
after every event; larger batches are what make consuming fast (one commit per batch).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from threshold.clock import Clock, SystemClock, from_iso, to_iso
from threshold.errors import ConfigError, ConsumerFailed, StaleWriteError
from threshold.patterns._topics._delivery import BatchState, CrashHook, Delivery
from threshold.patterns._topics._late import LatenessPolicy, record_late, side_topic
from threshold.patterns._topics._lease import lease_free, owner_id
from threshold.patterns._topics._topic import Topic
from threshold.store import Store, TopicEvent, VersionedRecord

OFFSETS = "offsets"
Handler = Callable[[Delivery], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Position:
    """A consumer's committed position: the last offset processed, and what goes with it."""

    topic: str
    consumer: str
    offset: int = 0
    version: int = 0
    state: Any = None
    max_event_time: str | None = None
    owner: str | None = None
    lease_until: str | None = None
    processed: int = 0
    late: dict[str, int] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)

    def value(self) -> dict[str, Any]:
        return {"topic": self.topic, "consumer": self.consumer, "offset": self.offset,
                "state": self.state, "max_event_time": self.max_event_time,
                "owner": self.owner, "lease_until": self.lease_until,
                "processed": self.processed, "late": self.late, "policy": self.policy}

    @classmethod
    def from_record(cls, record: VersionedRecord) -> Position:
        v = record.value if isinstance(record.value, dict) else {}
        topic, _, consumer = record.key.partition("/")
        return cls(topic=v.get("topic", topic), consumer=v.get("consumer", consumer),
                   offset=int(v.get("offset", 0)), version=record.version,
                   state=v.get("state"), max_event_time=v.get("max_event_time"),
                   owner=v.get("owner"), lease_until=v.get("lease_until"),
                   processed=int(v.get("processed", 0)), late=dict(v.get("late") or {}),
                   policy=dict(v.get("policy") or {}))


class Consumer:
    """Consumer ``name`` of ``topic``: ``await consumer.run()`` processes everything
    published so far; ``poll()`` processes one batch.

    The handler must be deterministic given the event and ``delivery.state`` and must act
    only through ``delivery.effect``/``publish``/``deliver``; then redelivery is harmless
    and replaying the topic from offset 0 under a new consumer name reproduces the same
    outputs. One instance per (topic, name) processes at a time: the lease in the offset
    record keeps a second instance idle until the first is gone.
    """

    def __init__(self, store: Store, topic: str | Topic, name: str, handler: Handler, *,
                 lateness: LatenessPolicy | None = None, batch_size: int = 100,
                 initial_state: Any = None, clock: Clock | None = None,
                 lease_clock: Clock | None = None, lease_seconds: float = 30.0,
                 owner: str | None = None, crash_hook: CrashHook | None = None) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, not {batch_size}")
        if not name or "/" in name:
            raise ConfigError(f"a consumer name must be non-empty with no '/': {name!r}")
        self.store = store
        self.topic = topic.name if isinstance(topic, Topic) else Topic(store, topic).name
        self.name, self.handler = name, handler
        self.lateness = lateness or LatenessPolicy()
        self.batch_size = batch_size
        self.initial_state = initial_state
        self.clock: Clock = clock or SystemClock()
        self.lease_clock: Clock = lease_clock or SystemClock()
        self.lease_seconds = lease_seconds
        self.owner = owner or owner_id(self)
        self.crash_hook = crash_hook
        self._committed: Position | None = None

    @property
    def key(self) -> str:
        return f"{self.topic}/{self.name}"

    def __repr__(self) -> str:
        return f"Consumer({self.topic!r}, {self.name!r})"

    async def position(self) -> Position:
        record = await self.store.get_record(OFFSETS, self.key)
        if record is None:
            return Position(self.topic, self.name, state=copy.deepcopy(self.initial_state),
                            policy=self.lateness.to_json())
        return Position.from_record(record)

    async def run(self, *, max_events: int | None = None) -> int:
        """Process batches until the topic is drained (or ``max_events`` were processed, or
        another live instance holds the lease). Returns the number of events processed."""
        done = 0
        while max_events is None or done < max_events:
            n = await self.poll()
            if n == 0:
                return done
            done += n
        return done

    async def poll(self) -> int:
        """Process one batch; return how many events it held (0: nothing to do, or the
        lease is held by another live instance). Raises ``ConsumerFailed`` when the handler
        raises (nothing of the batch is committed) and ``StaleWriteError`` when another
        instance took the lease over mid-batch."""
        # While its lease is live nobody else may take it, so the position this instance
        # committed last is still current and need not be read again.
        lease_now = self.lease_clock.now()
        cached, self._committed = self._committed, None
        live = cached is not None and cached.lease_until is not None and \
            from_iso(cached.lease_until) > lease_now
        pos = cached if cached is not None and live else await self.position()
        if not lease_free(pos.owner, pos.lease_until, self.owner, lease_now):
            return 0
        events = await self.store.read_topic(self.topic, after=pos.offset,
                                             limit=self.batch_size)
        if not events:
            return 0
        if pos.owner != self.owner:  # take the lease before any effect happens
            claimed = await self._write(pos, pos.offset, pos.state, pos.max_event_time,
                                        pos.late, 0)
            if claimed is None:
                return 0
            pos = claimed
        batch = BatchState(pos.state, pos.max_event_time, dict(pos.late))
        for event in events:
            try:
                await self._handle(event, batch)
            except (ConsumerFailed, StaleWriteError):
                raise
            except Exception as exc:
                raise ConsumerFailed(self.topic, self.name, event.offset,
                                     f"{type(exc).__name__}: {exc}") from exc
        written = await self._write(pos, events[-1].offset, batch.state, batch.max_event_time,
                                    batch.late, len(events))
        self._committed = written
        if written is None:
            latest = await self.store.get_record(OFFSETS, self.key)
            raise StaleWriteError(f"{OFFSETS}/{self.key}", pos.version,
                                  None if latest is None else latest.version)
        return len(events)

    async def _write(self, pos: Position, offset: int, state: Any, max_event_time: str | None,
                     late: dict[str, int], processed: int) -> Position | None:
        """Commit offset, state and watermark and extend the lease, in one CAS."""
        lease_until = to_iso(self.lease_clock.now() + timedelta(seconds=self.lease_seconds))
        new = Position(self.topic, self.name, offset, pos.version + 1, state, max_event_time,
                       self.owner, lease_until, pos.processed + processed, late,
                       self.lateness.to_json())
        written = await self.store.cas_record(OFFSETS, self.key, expected_version=pos.version,
                                              value=new.value(),
                                              now=to_iso(self.clock.now()))
        return None if written is None else new

    async def _handle(self, event: TopicEvent, batch: BatchState) -> None:
        policy = self.lateness
        when = policy.event_time(event)
        watermark = policy.watermark(batch.max_event_time)
        late = watermark is not None and when < watermark
        if policy.time == "event" and not late:
            batch.max_event_time = _later(batch.max_event_time, when)
        delivery = Delivery(store=self.store, consumer=self.name, event=event, late=late,
                            time=when, batch=batch, clock=self.clock, crash=self.crash_hook)
        if late:
            assert watermark is not None
            action = policy.on_late
            await record_late(self.store, event, self.name, watermark, action,
                              to_iso(self.clock.now()))
            batch.late[action] = batch.late.get(action, 0) + 1
            if action == "drop":
                return
            if action == "side_topic":
                await delivery.publish(side_topic(self.topic), event.payload, key=event.key,
                                       headers={**event.headers, "late_watermark":
                                                to_iso(watermark)})
                return
        await self.handler(delivery)

    async def reset(self, offset: int = 0) -> Position:
        """Move the committed offset back (to replay) or forward. A consumer with state can
        only go back to 0, where its state starts over; its watermark starts over too."""
        if offset < 0:
            raise ConfigError(f"offset must be >= 0, not {offset}")
        self._committed = None
        pos = await self.position()
        if offset != 0 and pos.state is not None:
            raise ConfigError(f"consumer {self.name} keeps state: reset it to 0, not {offset}")
        state = copy.deepcopy(self.initial_state) if offset == 0 else pos.state
        max_time = None if offset == 0 else pos.max_event_time
        reset = Position(self.topic, self.name, offset, pos.version, state, max_time,
                         None, None, pos.processed, dict(pos.late), self.lateness.to_json())
        written = await self.store.cas_record(OFFSETS, self.key, expected_version=pos.version,
                                              value=reset.value(), now=to_iso(self.clock.now()))
        if written is None:
            raise StaleWriteError(f"{OFFSETS}/{self.key}", pos.version, None)
        return Position.from_record(written)


def _later(current: str | None, when: datetime) -> str:
    if current is None or from_iso(current) < when:
        return to_iso(when)
    return current
