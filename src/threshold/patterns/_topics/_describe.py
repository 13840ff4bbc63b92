"""Topics and their consumers as data, for ``threshold topics`` and the web console."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from threshold.patterns._topics._consumer import OFFSETS, Position
from threshold.store import Store


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    name: str
    offset: int
    lag: int
    processed: int
    owner: str | None
    lease_until: str | None
    late: dict[str, int]
    policy: dict[str, Any]
    watermark_from: str | None


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    last_offset: int
    consumers: list[ConsumerInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def describe_topics(store: Store) -> list[TopicInfo]:
    """Every topic with its last offset, and every consumer with its committed offset and
    lag. A consumer of a topic with no events yet is listed under that topic too."""
    last = dict(await store.list_topics())
    consumers: dict[str, list[ConsumerInfo]] = {}
    for record in await store.list_records(OFFSETS):
        pos = Position.from_record(record)
        end = last.get(pos.topic, 0)
        consumers.setdefault(pos.topic, []).append(ConsumerInfo(
            pos.consumer, pos.offset, max(end - pos.offset, 0), pos.processed, pos.owner,
            pos.lease_until, pos.late, pos.policy, pos.max_event_time))
    names = sorted(set(last) | set(consumers))
    return [TopicInfo(n, last.get(n, 0), sorted(consumers.get(n, []), key=lambda c: c.name))
            for n in names]
