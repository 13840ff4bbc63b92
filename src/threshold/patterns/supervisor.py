"""P4 supervision: restart failed children one-for-one, back off, escalate past a limit.

A child is ``async def child(cctx: ChildContext) -> T``, run inside the parent's run. When it
raises, only that child is restarted (one-for-one), after an exponential backoff that is a
durable timer (``ctx.sleep``). Each failure is journaled with its time, so the restart
intensity (more than ``max_restarts`` failures within ``within``, as in Erlang/OTP) is
rebuilt from the journal on resume: a crash does not reset the count.

Past the limit the supervisor escalates: a ``supervisor.escalated`` journal event and an
approval in the inbox for ``escalate_to``. Approving clears the intensity window and the
child is restarted again; denying, an SLA lapse, or ``escalate_to=None`` raises
``RestartLimitExceeded`` for the parent to handle.

Replay needs every failure to be reproducible from the journal. ``ChildContext.step``
therefore journals a raised exception and raises it again (as ``StepFailed``) on replay;
a child should use it, not the parent's ``ctx.step``, for anything that may fail.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel

from threshold.boundary import Boundary
from threshold.clock import from_iso, to_iso
from threshold.effects import EffectContext
from threshold.errors import (
    NondeterminismError,
    RestartLimitExceeded,
    RunKilled,
    StepFailed,
    Suspend,
)
from threshold.ids import digest
from threshold.runtime import Crossing, RunContext
from threshold.runtime._approvals import apply_timeout
from threshold.store import ApprovalRecord, TimerRecord

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

# Raised on purpose or by a bug restarting cannot fix: these pass through the supervisor.
_NOT_FAILURES = (Suspend, RunKilled, NondeterminismError)


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """One-for-one restarts: at most ``max_restarts`` within ``within``, each after
    ``backoff * factor**(n-1)`` (capped at ``max_backoff``) for a child's n-th failure."""

    max_restarts: int = 3
    within: timedelta = timedelta(minutes=5)
    backoff: timedelta = timedelta(seconds=1)
    factor: float = 2.0
    max_backoff: timedelta = timedelta(minutes=5)
    escalate_to: str | None = "on_call_engineer"
    sla: timedelta | None = None  # an undecided escalation counts as denied after this

    def delay(self, failures: int) -> timedelta:
        delay: timedelta = min(self.backoff * self.factor ** (failures - 1), self.max_backoff)
        return delay


class ChildContext:
    """What a supervised child uses: the parent's journaled operations, plus the attempt."""

    def __init__(self, ctx: RunContext, child: str, attempt: int) -> None:
        self._ctx, self.child, self.attempt = ctx, child, attempt

    @property
    def run_id(self) -> str:
        return self._ctx.run_id

    def now(self) -> datetime:
        return self._ctx.now()

    def random(self) -> random.Random:
        return self._ctx.random()

    async def step(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``ctx.step`` whose failure is journaled too, and raised again on replay."""

        async def captured() -> dict[str, Any]:
            try:
                outcome = fn(*args)
                if inspect.isawaitable(outcome):
                    outcome = await outcome
            except _NOT_FAILURES:
                raise
            except Exception as exc:
                return {"error": f"{type(exc).__name__}: {exc}"}
            return {"value": outcome}

        record: dict[str, Any] = await self._ctx.step(name, captured)
        if "error" in record:
            raise StepFailed(name, record["error"])
        return record["value"]

    async def cross(self, boundary: Boundary[M], inputs: Mapping[str, Any], *,
                    model: str | None = None,
                    facts: Mapping[str, Any] | None = None) -> Crossing[M]:
        return await self._ctx.cross(boundary, inputs, model=model, facts=facts)

    async def effect(self, action: str, fn: Callable[[EffectContext], Awaitable[Any]], *,
                     key: str | None = None) -> Any:
        return await self._ctx.effect(action, fn, key=key)

    async def sleep(self, delta: timedelta, *, purpose: str = "sleep") -> str:
        return await self._ctx.sleep(delta, purpose=purpose)

    async def receive(self, channel: str, *, timeout: timedelta | None = None) -> Any:
        return await self._ctx.receive(channel, timeout=timeout)

    async def event(self, kind: str, **data: Any) -> None:
        await self._ctx.event(kind, **data)


ChildFn = Callable[[ChildContext], Awaitable[T]]


class Supervisor:
    """Supervises children inside one run; see the module docstring."""

    def __init__(self, ctx: RunContext, policy: RestartPolicy | None = None, *,
                 name: str = "supervisor") -> None:
        self.ctx, self.policy, self.name = ctx, policy or RestartPolicy(), name
        self._failures: list[datetime] = []  # inside the intensity window, oldest first
        self._escalations = 0

    async def run(self, child: str, fn: ChildFn[T]) -> T:
        """Run ``fn`` until it returns, restarting it after each failure."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await fn(ChildContext(self.ctx, child, attempt))
            except _NOT_FAILURES:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            await self._failed(child, attempt, error)

    async def run_all(self, children: Mapping[str, ChildFn[Any]]) -> dict[str, Any]:
        """Each child in order, each restarted on its own failures (one-for-one)."""
        return {name: await self.run(name, fn) for name, fn in children.items()}

    async def _failed(self, child: str, attempt: int, error: str) -> None:
        ctx, policy = self.ctx, self.policy
        # A step, not an event: its result (the failure time) must replay as recorded.
        def failure() -> dict[str, Any]:
            return {"supervisor": self.name, "child": child, "attempt": attempt,
                    "error": error, "at": to_iso(ctx.now())}

        record: dict[str, Any] = await ctx.step("supervisor.failure", failure)
        at = from_iso(record["at"])
        self._failures = [t for t in self._failures if at - t < policy.within] + [at]
        if len(self._failures) > policy.max_restarts:
            await self._escalate(child, record["error"])
        delay = policy.delay(attempt)
        await ctx.event("supervisor.restart", supervisor=self.name, child=child,
                        attempt=attempt + 1, delay_s=delay.total_seconds(),
                        restarts_in_window=len(self._failures), error=record["error"])
        await ctx.sleep(delay, purpose="supervisor.backoff")

    async def _escalate(self, child: str, error: str) -> None:
        ctx, policy = self.ctx, self.policy
        self._escalations += 1
        failures, within_s = len(self._failures), policy.within.total_seconds()
        approval_id = f"apr-{ctx.run_id}/{self.name}/{child}/{self._escalations}"
        reason = (f"child {child} failed {failures} times within {within_s:g} s "
                  f"(limit {policy.max_restarts}); last error: {error}")
        await ctx.event("supervisor.escalated", supervisor=self.name, child=child,
                        failures=failures, within_s=within_s, reason=reason,
                        approval_id=None if policy.escalate_to is None else approval_id,
                        role=policy.escalate_to)
        if policy.escalate_to is None:
            raise RestartLimitExceeded(self.name, child, failures, within_s,
                                       "no one to escalate to")
        opened: str = await ctx.step("supervisor.escalation", self._open_approval, approval_id,
                                     child, reason, {"failures": failures, "within_s": within_s,
                                                     "error": error})
        decision: dict[str, Any] = await ctx.step("supervisor.decision", self._decision, opened)
        if decision["status"] != "approved":
            raise RestartLimitExceeded(self.name, child, failures, within_s,
                                       f"escalation {decision['status']} by "
                                       f"{decision['decided_by']}")
        self._failures.clear()  # a person said: keep going

    async def _open_approval(self, approval_id: str, child: str, reason: str,
                             detail: dict[str, Any]) -> str:
        ctx, policy = self.ctx, self.policy
        assert policy.escalate_to is not None
        now = ctx.runtime.clock.now()
        value = {"supervisor": self.name, "child": child, **detail}
        sla_due = None if policy.sla is None else to_iso(now + policy.sla)
        await ctx.runtime.store.create_approval(ApprovalRecord(
            approval_id=approval_id, run_id=ctx.run_id,
            crossing_id=f"{ctx.run_id}/{self.name}/{child}", boundary=f"supervisor:{self.name}",
            proposal_hash=digest(value), value=value, reason=reason, role=policy.escalate_to,
            created_at=to_iso(now), sla_due=sla_due,
            fallback={"kind": "deny", "reroute_to": None,
                      "sla_s": None if policy.sla is None else policy.sla.total_seconds()}))
        if sla_due is not None:
            await ctx.runtime.store.add_timer(TimerRecord(f"{approval_id}/sla", ctx.run_id,
                                                          sla_due, "supervisor_sla"))
        return approval_id

    async def _decision(self, approval_id: str) -> dict[str, Any]:
        """The human's decision; suspends the run (durably) while there is none."""
        store = self.ctx.runtime.store
        approval = await store.get_approval(approval_id)
        assert approval is not None, f"escalation {approval_id} has no approval"
        if approval.status == "pending" and approval.sla_due is not None:
            timer = await store.get_timer(f"{approval_id}/sla")
            if timer is not None and timer.status == "fired":
                await apply_timeout(self.ctx.runtime, approval)
                approval = await store.get_approval(approval_id)
                assert approval is not None
        if approval.status == "pending":
            raise Suspend(f"awaiting {approval.role} for {approval_id}")
        return {"status": approval.status, "decided_by": approval.decided_by,
                "comment": approval.comment}
