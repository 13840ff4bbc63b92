"""``RunContext``: what agent code uses. Every operation is journaled by its position.

A run's code is re-executed from the top whenever the run resumes; operations that already
completed return their journaled result instead of running again, and a different operation
at a recorded position raises ``NondeterminismError``. Waits (timers, messages, humans)
raise ``Suspend`` after registering what will wake the run.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import BaseModel

from threshold._record import record
from threshold.boundary import Boundary
from threshold.clock import from_iso, to_iso
from threshold.effects import EffectContext
from threshold.errors import ConfigError, EffectFailed, NondeterminismError, Suspend
from threshold.ids import derive_seed, idempotency_key
from threshold.runtime._results import Crossing
from threshold.store import (
    EffectRecord,
    EventRecord,
    MessageRecord,
    RunRecord,
    StepRecord,
    TimerRecord,
)

if TYPE_CHECKING:
    from threshold.runtime._runtime import Runtime

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")


@record
class Position:
    """A journal position taken ahead of its operation (``RunContext.take_position``)."""

    seq: int
    kind: str
    name: str
    recorded: StepRecord | None


class RunContext:
    """The handle an agent function receives: ``async def agent(ctx, input) -> result``."""

    def __init__(self, runtime: Runtime, run: RunRecord, steps: dict[int, StepRecord],
                 unfinished_crossings: frozenset[int] = frozenset()) -> None:
        self.runtime = runtime
        self.run = run
        self._steps = steps
        # Positions of crossings journaled but not finished (a crash cut them short): only
        # these need their rows read back; every other new crossing starts from nothing.
        self._unfinished = unfinished_crossings
        self._seq = 0
        self._random_draws = 0
        self._logical_now = from_iso(run.created_at)

    # identity and time -------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def store(self) -> Any:
        return self.runtime.store

    def now(self) -> datetime:
        """Logical time: the time the last journaled operation completed, or the clock's
        time once the run is executing past its journal."""
        if self._seq < self._max_recorded_seq():
            return self._logical_now
        return self.runtime.clock.now()

    def random(self) -> random.Random:
        """A fresh ``Random`` derived from the run's seed and how many were drawn before."""
        self._random_draws += 1
        return random.Random(derive_seed(self.run.seed, self.run.run_id, "random",
                                         self._random_draws))

    def recorded(self, seq: int) -> StepRecord | None:
        """The journaled step at position ``seq``, if any."""
        return self._steps.get(seq)

    def _max_recorded_seq(self) -> int:
        return max(self._steps, default=0)

    def _next(self, kind: str, name: str) -> tuple[int, StepRecord | None]:
        self._seq += 1
        seq = self._seq
        recorded = self._steps.get(seq)
        if recorded is not None:
            if (recorded.kind, recorded.name) != (kind, name):
                raise NondeterminismError(self.run_id, seq, f"{kind}:{name}",
                                          f"{recorded.kind}:{recorded.name}")
            self._logical_now = from_iso(recorded.at)
        return seq, recorded

    def _step(self, seq: int, kind: str, name: str, result: Any) -> StepRecord:
        step = StepRecord(self.run_id, seq, kind, name, result, to_iso(self.runtime.clock.now()))
        self._steps[seq] = step
        return step

    # plain journaled steps ---------------------------------------------------------------
    @overload
    async def step(self, name: str, fn: Callable[..., Awaitable[R]], *args: Any) -> R: ...

    @overload
    async def step(self, name: str, fn: Callable[..., R], *args: Any) -> R: ...

    async def step(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` once and journal its JSON result; replays return the record.

        For reads of the outside world and computations whose result must not change on
        replay. Side effects belong in ``effect`` (idempotency keys) or a boundary."""
        seq, recorded = self._next("step", name)
        if recorded is not None:
            return recorded.result
        served, outcome = (False, None) if self.runtime.shadow is None else \
            self.runtime.shadow.step_result(self.run_id, seq, name)
        if not served:
            outcome = fn(*args)
            if inspect.isawaitable(outcome):
                outcome = await outcome
        await self.runtime.store.record_step(self._step(seq, "step", name, outcome))
        return outcome

    async def event(self, kind: str, **data: Any) -> None:
        """Journal a note (a transition, a routing decision) once, at this position."""
        seq, recorded = self._next("event", kind)
        if recorded is not None:
            return
        step = self._step(seq, "event", kind, data)
        await self.runtime.store.append_event(EventRecord(self.run_id, kind, data, step.at),
                                              step=step)

    async def stage(self, name: str, fn: Callable[[], Awaitable[R]]) -> R:
        """Run ``fn`` (which journals its own operations) as one stage of the run.

        Once the stage has completed, a resumed run skips it in one step: its recorded
        result comes back and the journal position jumps past the stage's operations, so a
        long run re-executes only the stage it is in. A stage cut short by a crash re-runs,
        its finished operations returning their records as usual. ``fn`` must return JSON."""
        seq, recorded = self._next("stage", name)
        if recorded is not None:
            self._seq = int(recorded.result["end"])
            replayed: R = recorded.result["value"]
            return replayed
        value = await fn()
        await self.runtime.store.record_step(self._step(seq, "stage", name,
                                                        {"end": self._seq, "value": value}))
        return value

    # effects -----------------------------------------------------------------------------
    async def effect(
        self,
        action: str,
        fn: Callable[[EffectContext], Awaitable[Any]],
        *,
        key: str | None = None,
    ) -> Any:
        """Perform a side effect at most once per idempotency key (outbox discipline).

        The intent is recorded first; ``fn`` receives the key so the receiving system can
        dedupe the one window no local record can close (a crash after the effect, before
        its result is recorded). A raised exception is recorded and raised again, as
        ``EffectFailed``, on every replay."""
        seq, recorded = self._next("effect", action)
        if recorded is not None:
            return _replay_effect(recorded, action)
        key = key or idempotency_key(self.run_id, seq, action)
        store = self.runtime.store
        at = to_iso(self.runtime.clock.now())
        stored = await store.begin_effect(EffectRecord(key, self.run_id, action, "intent", at))
        if stored.status == "done":
            step = self._step(seq, "effect", action, {"key": key, "result": stored.result})
            await store.record_step(step)
            return stored.result
        maybe_performed = stored.intent_at != at or stored.performed > 0
        ectx = EffectContext(key, self.run_id, seq, action, self.runtime.clock.now(),
                             int(maybe_performed))
        try:
            shadow = self.runtime.shadow
            result = await (fn(ectx) if shadow is None else shadow.effect(action, ectx, None))
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            failed = replace(stored, status="failed", error=message, performed=stored.performed
                             + 1, done_at=to_iso(self.runtime.clock.now()))
            step = self._step(seq, "effect", action, {"key": key, "error": message})
            await store.finish_effect(failed, step=step)
            raise EffectFailed(action, key, message) from exc
        self.runtime.crash_point("after_effect")
        done = replace(stored, status="done", result=result, error=None,
                       performed=stored.performed + 1, done_at=to_iso(self.runtime.clock.now()))
        await store.finish_effect(done, step=self._step(seq, "effect", action,
                                                        {"key": key, "result": result}))
        self.runtime.crash_point("after_record")
        return result

    # waiting -----------------------------------------------------------------------------
    async def sleep(self, delta: timedelta, *, purpose: str = "sleep",
                    guard: tuple[str, int] | None = None) -> str:
        return await self.sleep_until(self.now() + delta, purpose=purpose, guard=guard)

    async def sleep_until(self, when: datetime, *, purpose: str = "sleep",
                          guard: tuple[str, int] | None = None) -> str:
        """Wait durably until ``when``. Returns ``"fired"``, or ``"lapsed"`` when ``guard``
        (a record key ``namespace/key`` and the version it was read at) moved on first."""
        seq, recorded = self._next("timer", purpose)
        if recorded is not None:
            return str(recorded.result)
        store = self.runtime.store
        timer_id = f"{self.run_id}/{seq}"
        timer = await store.get_timer(timer_id)
        if timer is None:
            timer = TimerRecord(timer_id, self.run_id, to_iso(when), purpose,
                                guard_key=None if guard is None else guard[0],
                                guard_version=None if guard is None else guard[1])
            await store.add_timer(timer)
            if when <= self.runtime.clock.now():
                fired = await store.fire_due_timers(to_iso(self.runtime.clock.now()))
                timer = next((t for t in fired if t.timer_id == timer_id), timer)
        if timer.status in ("fired", "lapsed"):
            await store.record_step(self._step(seq, "timer", purpose, timer.status))
            return timer.status
        raise Suspend(f"timer {purpose} until {timer.fire_at}")

    async def receive(self, channel: str, *, timeout: timedelta | None = None) -> Any:
        """The next inbox message on ``channel`` (its payload), or None after ``timeout``.
        Messages are unique per id, so a redelivered message is never handled twice."""
        seq, recorded = self._next("receive", channel)
        if recorded is not None:
            return None if recorded.result is None else recorded.result["payload"]
        store = self.runtime.store
        message = await store.next_message(self.run_id, channel)
        if message is not None:
            step = self._step(seq, "receive", channel, {"message_id": message.message_id,
                                                         "payload": message.payload})
            await store.consume_message(message, step)
            return message.payload
        if timeout is not None:
            timer_id = f"{self.run_id}/{seq}/timeout"
            timer = await store.get_timer(timer_id)
            if timer is None:
                await store.add_timer(TimerRecord(timer_id, self.run_id,
                                                  to_iso(self.now() + timeout),
                                                  f"receive:{channel}"))
            elif timer.status in ("fired", "lapsed"):
                await store.record_step(self._step(seq, "receive", channel, None))
                return None
        raise Suspend(f"waiting for a message on {channel}")

    # boundaries --------------------------------------------------------------------------
    async def cross(
        self,
        boundary: Boundary[M],
        inputs: Mapping[str, Any],
        *,
        model: str | None = None,
        facts: Mapping[str, Any] | None = None,
    ) -> Crossing[M]:
        """Propose, verify, then commit or reject, durably. See ``threshold.runtime._crossing``."""
        return await self.cross_at(self.take_position("cross", boundary.name), boundary, inputs,
                                   model=model, facts=facts)

    def take_position(self, kind: str, name: str) -> Position:
        """Take the next journal position now for an operation run later.

        Concurrent patterns take every task's position in a fixed order before starting
        the tasks, so neither the event loop nor a semaphore decides the journal order.
        Raises ``NondeterminismError`` when the journal holds another operation there."""
        seq, recorded = self._next(kind, name)
        return Position(seq, kind, name, recorded)

    async def cross_at(
        self,
        position: Position,
        boundary: Boundary[M],
        inputs: Mapping[str, Any],
        *,
        model: str | None = None,
        facts: Mapping[str, Any] | None = None,
    ) -> Crossing[M]:
        """``cross`` at a position taken with ``take_position("cross", boundary.name)``."""
        from threshold.runtime._crossing import CrossingEngine

        if (position.kind, position.name) != ("cross", boundary.name):
            raise ConfigError(f"position {position.seq} was taken for {position.kind}:"
                              f"{position.name}, not cross:{boundary.name}")
        if position.recorded is not None:
            return Crossing.from_json(position.recorded.result, boundary.output)
        self.runtime.check_killed(self.run_id)
        engine = CrossingEngine(self, position.seq, boundary, dict(inputs), dict(facts or {}),
                                model or self.model_spec, resume=position.seq in self._unfinished)
        result = await engine.run()
        if engine.step_record is not None:
            self._steps[position.seq] = engine.step_record
        return result

    @property
    def model_spec(self) -> str:
        return str(self.run.pins.get("model") or self.runtime.default_model)

    async def deliver(self, run_id: str, channel: str, message_id: str, payload: Any) -> bool:
        """Send a message to another run's inbox (idempotent by ``message_id``)."""
        now = to_iso(self.runtime.clock.now())
        return bool(await self.runtime.store.deliver(
            MessageRecord(run_id, message_id, channel, payload, now), now=now))


def _replay_effect(recorded: StepRecord, action: str) -> Any:
    if "error" in recorded.result:
        raise EffectFailed(action, recorded.result["key"], recorded.result["error"])
    return recorded.result["result"]
