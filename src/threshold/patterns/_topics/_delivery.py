"""``Delivery``: one event handed to a consumer's handler, and the handler's only way to
act on the world.

Every side effect takes an idempotency key ``<topic>/<offset>/<consumer>/<action>``; its
intent is recorded before it runs and its result after (``begin_effect``/``finish_effect``).
A redelivered event (the consumer crashed before committing its offset) finds the result
and does not perform the effect again. The one window no record closes, a crash after the
effect and before its result, re-performs it with the same key and ``performed=1`` so the
receiving system can dedupe; publishing to a topic closes even that window by looking for
the key in the target topic first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from threshold.clock import Clock, to_iso
from threshold.effects import EffectContext
from threshold.errors import EffectFailed
from threshold.patterns._topics._topic import Topic
from threshold.store import EffectRecord, Store, TopicEvent

if TYPE_CHECKING:
    from threshold.runtime import Runtime

CrashHook = Callable[[str], None]


def effect_key(event: TopicEvent, consumer: str, action: str) -> str:
    return f"{event.topic}/{event.offset}/{consumer}/{action}"


@dataclass
class BatchState:
    """What a batch carries from event to event; committed with the offset."""

    state: Any
    max_event_time: str | None
    late: dict[str, int] = field(default_factory=dict)


class Delivery:
    """``event`` as delivered to consumer ``consumer``. ``late`` is set for a late event
    the policy says to process; ``time`` is the event's time under that policy."""

    def __init__(self, *, store: Store, consumer: str, event: TopicEvent, late: bool,
                 time: datetime, batch: BatchState, clock: Clock,
                 crash: CrashHook | None) -> None:
        self.store, self.consumer, self.event = store, consumer, event
        self.late, self.time = late, time
        self._batch, self._clock, self._crash = batch, clock, crash

    @property
    def payload(self) -> Any:
        return self.event.payload

    @property
    def offset(self) -> int:
        return self.event.offset

    @property
    def state(self) -> Any:
        """The consumer's own state (JSON), committed atomically with its offset: a
        deterministic projection kept here is exactly once, with no keys at all."""
        return self._batch.state

    @state.setter
    def state(self, value: Any) -> None:
        self._batch.state = value

    def key_for(self, action: str) -> str:
        return effect_key(self.event, self.consumer, action)

    def _crash_point(self, window: str) -> None:
        if self._crash is not None:
            self._crash(window)

    async def effect(self, action: str, fn: Callable[[EffectContext], Awaitable[Any]]) -> Any:
        """Run ``fn`` at most once per (event, consumer, action); a redelivery returns the
        recorded result. A raised exception is recorded and raised as ``EffectFailed``;
        the event is delivered again later and the effect tried again."""
        key = self.key_for(action)
        existing = await self.store.get_effect(key)
        if existing is not None and existing.status == "done":
            return existing.result
        now = self._clock.now()
        owner = f"consumer:{self.event.topic}/{self.consumer}"
        stored = existing or await self.store.begin_effect(
            EffectRecord(key, owner, action, "intent", to_iso(now)))
        if stored.status == "done":
            return stored.result
        # An intent left by an earlier delivery: the effect may have happened.
        maybe = int(existing is not None and existing.status == "intent")
        ectx = EffectContext(key, owner, self.event.offset, action, now, maybe)
        try:
            result = await fn(ectx)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            await self.store.finish_effect(replace(
                stored, status="failed", error=message, performed=stored.performed + 1,
                done_at=to_iso(self._clock.now())))
            raise EffectFailed(action, key, message) from exc
        self._crash_point("after_effect")
        await self.store.finish_effect(replace(
            stored, status="done", result=result, error=None, performed=stored.performed + 1,
            done_at=to_iso(self._clock.now())))
        self._crash_point("after_record")
        return result

    async def publish(self, topic: str, payload: Any, *, key: str | None = None,
                      headers: Mapping[str, Any] | None = None,
                      event_time: datetime | str | None = None) -> int:
        """Publish to ``topic`` once per (event, consumer, topic). The event time defaults
        to the input event's, so replaying a topic reproduces the same output events."""
        target = Topic(self.store, topic, clock=self._clock)

        async def append(e: EffectContext) -> int:
            return await target.publish(
                payload, key=key, event_time=event_time or self.event.event_time,
                producer=f"consumer:{self.consumer}",
                headers={"source_topic": self.event.topic,
                         "source_offset": self.event.offset, **(headers or {})},
                dedupe_key=e.key, check_existing=e.performed > 0)

        offset: int = await self.effect(f"publish:{topic}", append)
        return offset

    async def deliver(self, runtime: Runtime, run_id: str, channel: str,
                      payload: Any = None) -> bool:
        """Put this event in a run's inbox. The message id is ``<topic>/<offset>/<consumer>``
        and the inbox is unique per message id, so a redelivery is not a second message.
        True if the message is new."""
        message_id = f"{self.event.topic}/{self.event.offset}/{self.consumer}"
        return await runtime.deliver(run_id, channel, message_id,
                                     self.event.payload if payload is None else payload)
