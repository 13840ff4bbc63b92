"""P2, saga: steps that each register a compensation, undone newest first on failure.

::

    async with Saga(ctx, "renewal") as saga:
        hold = await saga.step("reserve", reserve, compensate=release)
        await saga.step("charge", charge, compensate=refund)
        offer = await saga.cross(pricing, inputs, compensate=withdraw)  # not committed: abort
        await saga.step("notify", notify)

Each step's action and each compensation is a ``ctx.effect``: it runs at most once per
idempotency key. A step's key is ``<run>/saga:<saga>/<step>`` unless given (so saga names
are unique within a run, step names within a saga), and its compensation's key is that key
plus ``/compensate``; a retried compensation keeps its key, so the receiving system can
dedupe. A failed step, an uncommitted ``saga.cross``, ``saga.abort(reason)`` or any other
exception leaving the ``async with`` block compensates the committed steps in reverse order
and raises ``SagaAborted``. Signals (a suspend, the kill switch), nondeterminism and store
failures pass through untouched: they are not the saga's failure.

A compensation that fails is retried after a durable backoff (``ctx.sleep``), up to
``CompensationRetry.max_attempts`` times; then it is escalated, never lost: the journal
gets ``saga.compensation_failed`` and the run suspends on ``ctx.receive(channel)`` until a
person or a supervisor delivers ``{"action": "retry" | "resolved", "by": ..., "note": ...}``
(``"resolved"``: it was undone by hand). A crash anywhere resumes the chain: the run
re-executes, journaled steps and compensations return their records, and the chain
continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from types import TracebackType
from typing import Any, Literal, NoReturn, TypeVar

from pydantic import BaseModel

from threshold.boundary import Boundary
from threshold.effects import EffectContext
from threshold.errors import (
    ConfigError,
    EffectFailed,
    NondeterminismError,
    SagaAborted,
    Signal,
    StoreError,
)
from threshold.patterns._coordination import describe_coordination
from threshold.runtime import Crossing, RunContext

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")

__all__ = ["Compensation", "CompensationRetry", "Saga", "describe_coordination"]

RESOLUTION_CHANNEL = "saga.resolution"

# ``compensate(result_of_the_step, effect_context)``; for ``saga.cross`` the result is the
# ``Crossing``.
Compensation = Callable[[Any, EffectContext], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class CompensationRetry:
    """Attempts per round before escalating, and the durable backoff between them."""

    max_attempts: int = 3
    backoff: timedelta = timedelta(seconds=30)
    factor: float = 2.0
    max_backoff: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.factor < 1 or self.backoff < timedelta(0):
            raise ConfigError(f"invalid compensation retry {self}")

    def delay(self, failures: int) -> timedelta:
        """The wait after the ``failures``-th failed attempt of a round."""
        return min(self.backoff * self.factor ** (failures - 1), self.max_backoff)


@dataclass(frozen=True, slots=True)
class _Committed:
    name: str
    key: str
    result: Any
    compensate: Compensation | None


class Saga:
    """See the module docstring. Create it in the agent function: it is rebuilt from the
    journal every time the run re-executes."""

    def __init__(self, ctx: RunContext, name: str, *,
                 retry: CompensationRetry | None = None,
                 channel: str = RESOLUTION_CHANNEL) -> None:
        self.ctx, self.name = ctx, name
        self.retry = retry or CompensationRetry()
        self.channel = channel
        self._committed: list[_Committed] = []
        self._names: set[str] = set()
        self._state: Literal["open", "completed", "aborted"] = "open"

    @property
    def steps(self) -> list[str]:
        """The committed steps, oldest first."""
        return [c.name for c in self._committed]

    # forward -----------------------------------------------------------------------------
    async def step(self, name: str, action: Callable[[EffectContext], Awaitable[R]], *,
                   compensate: Compensation | None = None, key: str | None = None) -> R:
        """Perform ``action`` once as an effect and register ``compensate`` for it. If the
        action fails, the saga compensates and raises ``SagaAborted``."""
        self._claim(name)
        key = key or f"{self.ctx.run_id}/saga:{self.name}/{name}"
        index = len(self._committed) + 1
        try:
            result: R = await self.ctx.effect(f"saga:{self.name}:{name}", action, key=key)
        except EffectFailed as exc:
            await self._record_step(name, index, key, "failed", error=exc.message)
            await self.abort(f"step {name} failed: {exc.message}", step=name)
        self._committed.append(_Committed(name, key, result, compensate))
        await self._record_step(name, index, key, "done")
        return result

    async def cross(self, boundary: Boundary[M], inputs: Mapping[str, Any], *,
                    compensate: Compensation | None = None, model: str | None = None,
                    facts: Mapping[str, Any] | None = None) -> Crossing[M]:
        """Cross ``boundary`` as a step: a commit registers ``compensate`` (it receives the
        ``Crossing``); any other outcome compensates and raises ``SagaAborted``."""
        self._claim(boundary.name)
        index = len(self._committed) + 1
        crossing = await self.ctx.cross(boundary, inputs, model=model, facts=facts)
        key = f"{crossing.crossing_id}/{boundary.action}"
        if not crossing.committed:
            await self._record_step(boundary.name, index, key, crossing.outcome,
                                    error=crossing.reason)
            await self.abort(f"{boundary.name} {crossing.outcome}: {crossing.reason}",
                             step=boundary.name)
        self._committed.append(_Committed(boundary.name, key, crossing, compensate))
        await self._record_step(boundary.name, index, key, "done")
        return crossing

    async def complete(self) -> None:
        """Mark the saga done: nothing will be compensated after this."""
        self._require_open()
        self._state = "completed"
        await self.ctx.event("saga.completed", saga=self.name, steps=self.steps)

    # backward ----------------------------------------------------------------------------
    async def abort(self, reason: str, *, step: str | None = None) -> NoReturn:
        """Compensate every committed step, newest first, then raise ``SagaAborted``."""
        compensated = await self.compensate(reason, step=step)
        raise SagaAborted(self.name, step, reason, compensated)

    async def compensate(self, reason: str, *, step: str | None = None) -> list[str]:
        """Compensate every committed step, newest first, and return their names."""
        self._require_open()
        self._state = "aborted"
        chain = [c for c in reversed(self._committed) if c.compensate is not None]
        await self.ctx.event("saga.aborted", saga=self.name, reason=reason, step=step,
                             compensate=[c.name for c in chain])
        for committed in chain:
            await self._compensate_one(committed)
        names = [c.name for c in chain]
        await self.ctx.event("saga.compensated", saga=self.name, steps=names)
        return names

    async def _compensate_one(self, step: _Committed) -> None:
        assert step.compensate is not None
        action = f"saga:{self.name}:{step.name}:compensate"
        key = f"{step.key}/compensate"
        undo = partial(step.compensate, step.result)
        attempt = 0
        while True:
            error = ""
            for failures in range(1, self.retry.max_attempts + 1):
                attempt += 1
                try:
                    await self.ctx.effect(action, undo, key=key)
                except EffectFailed as exc:
                    error = exc.message
                    last = failures == self.retry.max_attempts
                    delay = None if last else self.retry.delay(failures)
                    await self.ctx.event(
                        "saga.compensate", saga=self.name, step=step.name, key=key,
                        attempt=attempt, status="failed", error=error,
                        retry_in_s=None if delay is None else delay.total_seconds())
                    if delay is not None:
                        await self.ctx.sleep(delay, purpose="saga.backoff")
                    continue
                await self.ctx.event("saga.compensate", saga=self.name, step=step.name,
                                     key=key, attempt=attempt, status="ok")
                return
            await self.ctx.event("saga.compensation_failed", saga=self.name, step=step.name,
                                 key=key, attempts=attempt, error=error, channel=self.channel)
            if await self._resolution(step) == "resolved":
                return

    async def _resolution(self, step: _Committed) -> str:
        """Wait (durably) for a person or supervisor; invalid messages are journaled."""
        while True:
            payload = await self.ctx.receive(self.channel)
            error = _check_resolution(payload, step.name)
            if error is None:
                break
            await self.ctx.event("saga.resolution_invalid", saga=self.name, step=step.name,
                                 payload=payload, error=error)
        await self.ctx.event("saga.resolution", saga=self.name, step=step.name,
                             action=payload["action"], by=payload["by"],
                             note=payload.get("note"))
        return str(payload["action"])

    # context manager ---------------------------------------------------------------------
    async def __aenter__(self) -> Saga:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            if self._state == "open":
                await self.complete()
            return
        if self._state != "open" or not _compensates(exc):
            return
        reason = f"{type(exc).__name__}: {exc}"
        compensated = await self.compensate(reason)
        raise SagaAborted(self.name, None, reason, compensated) from exc

    # helpers -----------------------------------------------------------------------------
    def _claim(self, name: str) -> None:
        self._require_open()
        if name in self._names:
            raise ConfigError(f"saga {self.name}: step {name!r} twice; step names are keys")
        self._names.add(name)

    def _require_open(self) -> None:
        if self._state != "open":
            raise ConfigError(f"saga {self.name} is already {self._state}")

    async def _record_step(self, name: str, index: int, key: str, status: str, *,
                           error: str | None = None) -> None:
        await self.ctx.event("saga.step", saga=self.name, step=name, index=index, key=key,
                             status=status, error=error)


def _compensates(exc: BaseException) -> bool:
    """Only the saga's own failures compensate; control flow and infrastructure do not."""
    if not isinstance(exc, Exception):
        return False  # cancellation, crash injection
    return not isinstance(exc, Signal | NondeterminismError | StoreError)


def _check_resolution(payload: Any, step: str) -> str | None:
    if not isinstance(payload, dict) or not isinstance(payload.get("by"), str):
        return "expected an object with 'action' and 'by' (who decided)"
    if payload.get("action") not in ("retry", "resolved"):
        return "'action' must be 'retry' or 'resolved'"
    if payload.get("step", step) != step:
        return f"this resolution is for step {payload.get('step')!r}, the saga waits on {step!r}"
    return None
