"""Late and out-of-order events: a declared policy, a watermark, a recorded decision.

With ``time="event"`` an event's time is the producer's ``event_time``; the watermark is
the greatest event time this consumer has seen minus ``allowed_lateness``, and an event
older than the watermark is late. Out-of-order events inside the allowed lateness are
ordinary. With ``time="processing"`` an event's time is when it was appended: the log's
order is time order, so nothing is ever late.

The watermark is committed with the offset, so a batch redelivered after a crash sees the
same watermark and reaches the same decisions. Each late decision is written once per
(topic, consumer, offset) as a record, with a ``topic.late`` journal event in the same write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from threshold.clock import from_iso, to_iso
from threshold.errors import ConfigError
from threshold.store import EventRecord, Store, TopicEvent

LATE_NAMESPACE = "topic_late"
LATE_KIND = "topic.late"  # a kind the diagnose tool reads as a late event

TimeBasis = Literal["event", "processing"]
LateAction = Literal["process", "drop", "side_topic"]


@dataclass(frozen=True, slots=True)
class LatenessPolicy:
    """How a consumer treats time. ``on_late``: ``process`` (hand it to the handler with
    ``delivery.late`` set), ``drop`` (skip it; the decision is recorded) or ``side_topic``
    (re-publish it to ``<topic>.late`` and skip it)."""

    time: TimeBasis = "event"
    allowed_lateness: timedelta = timedelta(0)
    on_late: LateAction = "process"

    def __post_init__(self) -> None:
        if self.time not in ("event", "processing"):
            raise ConfigError(f"lateness time basis must be 'event' or 'processing', not "
                              f"{self.time!r}")
        if self.on_late not in ("process", "drop", "side_topic"):
            raise ConfigError(f"on_late must be process, drop or side_topic, not "
                              f"{self.on_late!r}")
        if self.allowed_lateness < timedelta(0):
            raise ConfigError("allowed_lateness must not be negative")

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "allowed_lateness_s": self.allowed_lateness.total_seconds(),
                "on_late": self.on_late}

    def event_time(self, event: TopicEvent) -> datetime:
        return from_iso(event.event_time if self.time == "event" else event.appended_at)

    def watermark(self, max_event_time: str | None) -> datetime | None:
        if self.time == "processing" or max_event_time is None:
            return None
        return from_iso(max_event_time) - self.allowed_lateness


def side_topic(topic: str) -> str:
    return f"{topic}.late"


async def record_late(store: Store, event: TopicEvent, consumer: str, watermark: datetime,
                      action: LateAction, now: str) -> bool:
    """Record the decision for a late event once; False if it was recorded before (a
    redelivery reaches the same decision and must not journal it twice)."""
    decision = {"topic": event.topic, "offset": event.offset, "consumer": consumer,
                "key": event.key, "event_time": event.event_time,
                "watermark": to_iso(watermark), "action": action}
    written = await store.cas_record(
        LATE_NAMESPACE, f"{event.topic}/{consumer}/{event.offset}", expected_version=0,
        value=decision, now=now, event=EventRecord(None, LATE_KIND, decision, now))
    return written is not None
