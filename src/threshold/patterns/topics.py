"""P3, event-driven sequencing: durable topics, at-least-once consumers, declared lateness.

::

    orders = Topic(store, "orders", clock=clock)
    await orders.publish({"sku": "A", "qty": 2}, key="c1", producer="shop")

    async def score(d: Delivery) -> None:           # deterministic given event and state
        d.state[d.event.key] = d.state.get(d.event.key, 0) + d.payload["qty"]
        await d.publish("scores", {"key": d.event.key, "total": d.state[d.event.key]})

    consumer = Consumer(store, "orders", "scorer", score, initial_state={},
                        lateness=LatenessPolicy("event", timedelta(minutes=5), "side_topic"))
    await consumer.run()

- ``Topic``: append-only, ordered offsets; ``publish_crossing`` stamps an LLM-produced
  event with the producer, the model version and the prompt hash of the committed proposal.
- ``Consumer``: durable offsets in records ``offsets/<topic>/<consumer>`` (CAS), committed
  per batch together with the consumer's state, watermark and lease. Effects go through
  ``Delivery.effect``/``publish``/``deliver`` with the key ``<topic>/<offset>/<consumer>/
  <action>``, so a batch redelivered after a crash performs nothing twice.
- ``LatenessPolicy``: event time or processing time, a watermark (max event time seen minus
  allowed lateness), and what a late event gets: ``process``, ``drop`` or ``side_topic``
  (``<topic>.late``); every late decision is recorded once, with a ``topic.late`` event.
- LLM-backed consumers hand events to runs, which cross boundaries durably:
  ``start_runs`` (one run per event, idempotent by run id) or ``deliver_to_runs`` (an
  inbox message per event, idempotent by message id).
- Throughput: ``publish_many`` appends a batch in one transaction (SQLite), and a
  consumer's ``batch_size`` sets how many events share one offset commit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from threshold.patterns._topics._consumer import OFFSETS, Consumer, Handler, Position
from threshold.patterns._topics._delivery import Delivery, effect_key
from threshold.patterns._topics._describe import ConsumerInfo, TopicInfo, describe_topics
from threshold.patterns._topics._late import (
    LATE_KIND,
    LATE_NAMESPACE,
    LatenessPolicy,
    side_topic,
)
from threshold.patterns._topics._topic import Outgoing, Topic, provenance_headers
from threshold.runtime import Runtime

__all__ = [
    "LATE_KIND",
    "LATE_NAMESPACE",
    "OFFSETS",
    "Consumer",
    "ConsumerInfo",
    "Delivery",
    "Handler",
    "LatenessPolicy",
    "Outgoing",
    "Position",
    "Topic",
    "TopicInfo",
    "deliver_to_runs",
    "describe_topics",
    "effect_key",
    "provenance_headers",
    "side_topic",
    "start_runs",
]


def deliver_to_runs(runtime: Runtime, route: Callable[[Delivery], str | list[str] | None],
                    channel: str) -> Handler:
    """A handler that puts each event into the inbox of the run(s) ``route`` names (none:
    skipped). The inbox is unique per message id, so redelivery is never a second message."""

    async def handle(delivery: Delivery) -> None:
        target = route(delivery)
        for run_id in [target] if isinstance(target, str) else (target or []):
            await delivery.deliver(runtime, run_id, channel)

    return handle


def start_runs(runtime: Runtime, agent: str,
               make_input: Callable[[Delivery], BaseModel | dict[str, Any]] | None = None, *,
               seed: Callable[[Delivery], int] | None = None) -> Handler:
    """An LLM-backed consumer: one run of ``agent`` per event, with run id
    ``<consumer>:<topic>:<offset>``. Starting a run is idempotent by its id, so a
    redelivered event does not start a second run; the run's crossings record the
    provenance of every proposal it makes."""

    async def handle(delivery: Delivery) -> None:
        data = make_input(delivery) if make_input else dict(delivery.payload or {})
        await runtime.start(agent, data,
                            run_id=f"{delivery.consumer}:{delivery.event.topic}:"
                                   f"{delivery.offset}",
                            seed=seed(delivery) if seed else delivery.offset)

    return handle
