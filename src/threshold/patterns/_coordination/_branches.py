"""Crossings run concurrently inside one run, in a journal order no scheduler decides.

Every branch takes its journal position before any branch starts, in the order given, so
neither the event loop nor the semaphore that bounds concurrency decides where a crossing
is recorded. A branch that does not end by itself (its timeout expired, or the pattern
cancelled it because the gather was already decided) is closed at its own position as a
failed crossing whose reason starts with ``timeout:`` or ``cancelled:``. A resumed run
reads that record and takes the same branch without calling the model again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from threshold.boundary import Boundary
from threshold.clock import to_iso
from threshold.errors import ConfigError, Suspend
from threshold.runtime import Crossing, RunContext
from threshold.runtime._context import Position
from threshold.store import CrossingRecord, StepRecord

M = TypeVar("M", bound=BaseModel)

TIMEOUT = "timeout:"
CANCELLED = "cancelled:"

BranchStatus = Literal["accepted", "rejected", "failed", "timed_out", "cancelled"]


@dataclass(frozen=True, slots=True)
class BranchSpec(Generic[M]):
    """One crossing to run concurrently. ``timeout`` is wall time in seconds from the moment
    the branch starts (after the semaphore); it bounds proposer latency, not business time."""

    label: str
    boundary: Boundary[M]
    inputs: Mapping[str, Any]
    model: str | None = None
    facts: Mapping[str, Any] | None = None
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class BranchResult(Generic[M]):
    index: int
    label: str
    crossing: Crossing[M]

    @property
    def status(self) -> BranchStatus:
        return status_of(self.crossing)


StopRule = Callable[[Mapping[int, Crossing[Any]]], bool]


def status_of(crossing: Crossing[Any]) -> BranchStatus:
    """A crossing's outcome in coordination terms: only an accepted proposal counts."""
    if crossing.outcome == "committed":
        return "accepted"
    if crossing.outcome in ("aborted", "denied"):
        return "rejected"
    if crossing.reason.startswith(TIMEOUT):
        return "timed_out"
    if crossing.reason.startswith(CANCELLED):
        return "cancelled"
    return "failed"


class _TimedOut:
    """What a branch task returns when its own timeout expired."""


_TIMED_OUT = _TimedOut()


async def run_branches(
    ctx: RunContext,
    specs: Sequence[BranchSpec[Any]],
    *,
    concurrency: int | None = None,
    stop: StopRule | None = None,
    cancel_reason: str = "the gather was decided without it",
) -> list[BranchResult[Any]]:
    """Run ``specs`` as concurrent crossings and return their results in the given order.

    ``stop`` sees the results so far (by index) after each completion; once it returns True
    the unfinished branches are cancelled and recorded as such. A branch that suspends
    (escalation, durable backoff) lets the others finish first; then the run suspends."""
    if concurrency is not None and concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, not {concurrency}")
    for spec in specs:
        if spec.timeout is not None and spec.timeout <= 0:
            raise ConfigError(f"branch {spec.label}: timeout must be positive")
        if spec.boundary.commit is not None and (spec.timeout is not None or stop is not None):
            # Interrupting a crossing mid-commit would leave an effect of unknown fate.
            raise ConfigError(f"branch {spec.label}: a boundary with a commit cannot be "
                              "timed out or cancelled; use a proposer (no commit)")
    positions = [ctx.take_position("cross", s.boundary.name) for s in specs]
    done: dict[int, Crossing[Any]] = {
        i: Crossing.from_json(p.recorded.result, specs[i].boundary.output)
        for i, p in enumerate(positions) if p.recorded is not None}
    live = [i for i in range(len(specs)) if i not in done]
    interrupted: dict[int, tuple[str, bool]] = {}
    if live and stop is not None and stop(done):
        # A crash fell between the decision and its record: close the rest as cancelled.
        interrupted = {i: (f"{CANCELLED} {cancel_reason}", False) for i in live}
    elif live:
        interrupted = await _run_live(ctx, specs, positions, live, done, concurrency, stop,
                                      cancel_reason)
    for i in sorted(interrupted):
        reason, in_flight = interrupted[i]
        done[i] = await close_interrupted(ctx, positions[i], specs[i], reason, in_flight)
    return [BranchResult(i, specs[i].label, done[i]) for i in range(len(specs))]


async def _run_live(
    ctx: RunContext,
    specs: Sequence[BranchSpec[Any]],
    positions: Sequence[Position],
    live: Sequence[int],
    done: dict[int, Crossing[Any]],
    concurrency: int | None,
    stop: StopRule | None,
    cancel_reason: str,
) -> dict[int, tuple[str, bool]]:
    """Run the branches with no record yet; fill ``done`` and return the ones to close
    as interrupted, with their reason and whether a proposal was in flight."""
    gate = asyncio.Semaphore(concurrency or len(live))
    started: set[int] = set()

    async def branch(i: int) -> Crossing[Any] | _TimedOut:
        spec = specs[i]
        async with gate:
            started.add(i)
            deadline = asyncio.timeout(spec.timeout)
            try:
                async with deadline:
                    return await ctx.cross_at(positions[i], spec.boundary, spec.inputs,
                                              model=spec.model, facts=spec.facts)
            except TimeoutError:
                if deadline.expired():
                    return _TIMED_OUT
                raise

    tasks = {asyncio.create_task(branch(i), name=f"{ctx.run_id}/{specs[i].label}"): i
             for i in live}
    pending: set[asyncio.Task[Crossing[Any] | _TimedOut]] = set(tasks)
    interrupted: dict[int, tuple[str, bool]] = {}
    suspended: Suspend | None = None
    failure: BaseException | None = None
    try:
        while pending and failure is None:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(finished, key=lambda t: tasks[t]):
                i = tasks[task]
                exc = task.exception()
                if isinstance(exc, Suspend):
                    suspended = suspended or exc
                elif exc is not None:
                    failure = failure or exc
                else:
                    _take(task.result(), i, specs[i], done, interrupted)
            if suspended is None and failure is None and stop is not None and stop(done):
                break
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    if failure is not None:
        raise failure
    for task in pending:
        i = tasks[task]
        if task.cancelled():
            interrupted[i] = (f"{CANCELLED} {cancel_reason}", i in started)
        else:
            exc = task.exception()
            if exc is not None:
                raise exc
            _take(task.result(), i, specs[i], done, interrupted)
    if suspended is not None:
        for i in sorted(interrupted):  # decisions already taken are kept across the suspend
            reason, in_flight = interrupted[i]
            done[i] = await close_interrupted(ctx, positions[i], specs[i], reason, in_flight)
        raise suspended
    return interrupted


def _take(result: Crossing[Any] | _TimedOut, i: int, spec: BranchSpec[Any],
          done: dict[int, Crossing[Any]], interrupted: dict[int, tuple[str, bool]]) -> None:
    if isinstance(result, _TimedOut):
        reason = f"{TIMEOUT} no answer within {spec.timeout:g} s"
        interrupted[i] = (reason, True)
        done[i] = Crossing(spec.boundary.name, "failed", 0, reason=reason)  # provisional
    else:
        done[i] = result


async def close_interrupted(ctx: RunContext, position: Position, spec: BranchSpec[Any],
                            reason: str, in_flight: bool) -> Crossing[Any]:
    """Record a branch that did not end by itself as a failed crossing at its position.

    ``attempts`` counts the proposals recorded plus the one in flight, if any: a call the
    provider may still be serving has been spent."""
    landed = ctx.recorded(position.seq)
    if landed is not None:
        # Cancelled while its own record was being committed: the crossing did end.
        return Crossing.from_json(landed.result, spec.boundary.output)
    store = ctx.runtime.store
    b = spec.boundary
    crossing_id = f"{ctx.run_id}/{position.seq}"
    now = to_iso(ctx.runtime.clock.now())
    state = await store.load_crossing(crossing_id)
    attempts = (0 if state is None else state.crossing.attempts) + int(in_flight)
    crossing: Crossing[Any] = Crossing(b.name, "failed", attempts, reason=reason,
                                       crossing_id=crossing_id)
    step = StepRecord(ctx.run_id, position.seq, "cross", b.name, crossing.to_json(), now)
    if state is None and not in_flight:  # never started: a journal position, no crossing
        await store.record_step(step)
        return crossing
    row = state.crossing if state is not None else CrossingRecord(
        crossing_id, ctx.run_id, position.seq, b.name, b.version, b.action,
        [list(v) for v in b.verifier_ids], "open", 0, now, spec.model or ctx.model_spec,
        b.prompt.id, b.prompt.version)
    await store.finish_crossing(replace(row, status="failed", attempts=attempts, ended_at=now,
                                        reason=reason), effect=None, step=step)
    return crossing
