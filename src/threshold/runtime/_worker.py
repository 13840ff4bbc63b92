"""The worker loop: fire due timers, claim ready runs, execute them to their next wait.

A worker resumes unfinished runs by itself: runs leased by a dead process (same host, pid
gone, or a crashed runtime in this process) or with an expired lease are claimed again. It
claims only runs of the agent versions it deploys.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from threshold.clock import VirtualClock, from_iso, to_iso
from threshold.errors import NondeterminismError, RunKilled, StoreError, Suspend
from threshold.runtime._context import RunContext
from threshold.runtime._runtime import Runtime
from threshold.store import EventRecord, RunRecord, StepRecord

# Runtimes alive in this process, by owner id: a crashed in-process runtime is not here.
_LIVE_OWNERS: set[str] = set()
_CLOCK_META = "clock.virtual_now"
KILL_POLL_SECONDS = 0.25  # real time; a kill switch stops an executing run within this
VIRTUAL_BARRIER_SECONDS = 0.05  # real time between looks while others hold virtual time


class Worker:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.owner = runtime.owner
        # Journals of the runs this worker executed, kept between their resumes.
        self._steps_cache: dict[str, dict[int, StepRecord]] = {}
        self._owners_checked: datetime | None = None
        self._dead: list[str] = []
        self._kill_cancelled: set[str] = set()

    async def run_until_idle(self) -> int:
        _LIVE_OWNERS.add(self.owner)
        try:
            await self._restore_virtual_time()
            executed = 0
            while True:
                claimed = await self._round()
                executed += claimed
                if claimed:
                    continue  # what those runs did may have readied others
                if await self._run_actors():
                    continue
                nxt = await self._next_due()
                if nxt is None:
                    return executed
                await self._advance_to(nxt)
        finally:
            _LIVE_OWNERS.discard(self.owner)

    async def serve(self, *, poll_seconds: float, stop: Callable[[], bool] | None) -> None:
        _LIVE_OWNERS.add(self.owner)
        try:
            await self._restore_virtual_time()
            while stop is None or not stop():
                if await self._round() or await self._run_actors():
                    continue
                nxt = await self._next_due()
                if nxt is not None and isinstance(self.runtime.clock, VirtualClock):
                    if await self._others_busy(nxt):
                        await self._idle(min(poll_seconds, VIRTUAL_BARRIER_SECONDS), None)
                    else:
                        await self._advance_to(nxt)
                    continue
                await self._idle(poll_seconds, nxt)
        finally:
            _LIVE_OWNERS.discard(self.owner)

    async def _round(self) -> int:
        rt = self.runtime
        await self.store.fire_due_timers(to_iso(rt.clock.now()))
        await rt.refresh_kills()
        lease_now = rt.lease_clock.now()
        claimed = await self.store.claim_runs(
            self.owner, now=to_iso(lease_now),
            lease_until=to_iso(lease_now + timedelta(seconds=rt.lease_seconds)),
            limit=rt.concurrency, dead_owners=await self._dead_owners(), agents=self._served())
        if not claimed:
            return 0
        if isinstance(rt.clock, VirtualClock):
            # Another worker may have moved virtual time on and fired the timers that made
            # these runs ready: they execute at that time, never at this worker's older one.
            await self._restore_virtual_time()
        executing: dict[str, asyncio.Task[None]] = {}
        watcher: asyncio.Task[None] | None = None
        heartbeat = asyncio.create_task(self._renew_leases())
        try:
            async with asyncio.TaskGroup() as group:
                for run in claimed:
                    executing[run.run_id] = group.create_task(self.execute(run))
                watcher = asyncio.create_task(self._watch_kills(executing))
        finally:
            for task in (watcher, heartbeat):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        return len(claimed)

    async def _renew_leases(self) -> None:
        """Keep this worker's leases alive while its runs execute, so a lease lapses when
        the worker dies or hangs, not because a run is slow (another worker would take it)."""
        rt = self.runtime
        while True:
            await asyncio.sleep(max(rt.lease_seconds / 3, 0.05))
            until = rt.lease_clock.now() + timedelta(seconds=rt.lease_seconds)
            with contextlib.suppress(StoreError):  # the store is down; try again next beat
                await self.store.renew_leases(self.owner, lease_until=to_iso(until))

    async def _idle(self, poll_seconds: float, nxt: str | None) -> None:
        """Nothing to do: wait at most ``poll_seconds``, less if a timer is due sooner, and
        wake early when the store announces work (the optional ``wait_for_work``, e.g.
        PostgreSQL's LISTEN/NOTIFY)."""
        delay = poll_seconds
        if nxt is not None:
            due_in = (from_iso(nxt) - self.runtime.clock.now()).total_seconds()
            delay = min(delay, max(due_in, 0.01))
        wait_for_work = getattr(self.store, "wait_for_work", None)
        if wait_for_work is None:
            await asyncio.sleep(delay)
        else:
            await wait_for_work(delay)

    async def _watch_kills(self, executing: dict[str, asyncio.Task[None]]) -> None:
        """Stop a killed run mid-call or mid-loop, not only at its next crossing: every
        ``KILL_POLL_SECONDS`` of real time, look for kill switches and cancel their runs."""
        rt = self.runtime
        while True:
            await asyncio.sleep(KILL_POLL_SECONDS)
            live = [run_id for run_id, task in executing.items() if not task.done()]
            await rt.refresh_run_kills(live)
            for run_id in live:
                if rt.is_killed(run_id):
                    self._kill_cancelled.add(run_id)
                    executing[run_id].cancel(f"kill switch: {run_id}")

    async def _run_actors(self) -> int:
        done = 0
        for actor in self.runtime.actors:
            done += await actor.act(self.runtime.clock.now())
        return done

    async def _next_due(self) -> str | None:
        """The earliest of the next timer and every actor's next action."""
        candidates = [await self.store.next_timer_at()]
        for actor in self.runtime.actors:
            due = await actor.next_due()
            candidates.append(None if due is None else to_iso(due))
        present = [c for c in candidates if c is not None]
        return min(present) if present else None

    async def _others_busy(self, nxt: str) -> bool:
        """Virtual time shared by several workers moves on only when no run anywhere is
        ready or executing at the present time: otherwise one worker's jump would let the
        others execute runs late (a SIGKILLed worker's runs hold time until taken over).
        Checked after ``nxt`` was computed, so work an actor creates meanwhile is due now."""
        if from_iso(nxt) <= self.runtime.clock.now():
            return False  # no jump: the next round handles it
        counts = await self.store.count_runs()
        if counts.get("running", 0):
            return True
        if not counts.get("ready", 0):
            return False
        # Workers sharing virtual time deploy the same agents: a ready run this one cannot
        # serve, no one can. It waits for a migration (`threshold runs stranded` reports
        # it) and must not hold the simulation's time.
        served = set(self._served())
        return any((run.agent, run.agent_version) in served
                   for run in await self.store.list_runs(status="ready"))

    async def _advance_to(self, when: str) -> None:
        await self.runtime.clock.sleep_until(from_iso(when))
        if isinstance(self.runtime.clock, VirtualClock):
            await self.store.set_meta(_CLOCK_META, to_iso(self.runtime.clock.now()))

    async def _restore_virtual_time(self) -> None:
        """A resumed simulation continues at the virtual time it had reached."""
        clock = self.runtime.clock
        if isinstance(clock, VirtualClock):
            saved = await self.store.get_meta(_CLOCK_META)
            if saved is not None:
                clock.advance_to(from_iso(saved))

    def _served(self) -> list[tuple[str, str]]:
        """The (agent, version) pairs this worker executes: it claims runs of these only,
        so in a rolling deploy each version's runs wait for a worker that has it."""
        return [(d.name, d.version) for d in self.runtime.definitions()]

    async def _dead_owners(self) -> list[str]:
        """Owners whose process is gone, checked at start and then every third of a lease:
        listing owners scans the runs, too costly for every round of a large simulation."""
        now = self.runtime.lease_clock.now()
        if self._owners_checked is not None and (now - self._owners_checked).total_seconds() \
                < self.runtime.lease_seconds / 3:
            return self._dead
        self._owners_checked = now
        self._dead = await self._find_dead_owners()
        return self._dead

    async def _find_dead_owners(self) -> list[str]:
        host, me = socket.gethostname(), os.getpid()
        dead = []
        for owner in await self.store.lease_owners():
            parts = owner.split(":")
            if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
                continue  # another host: only its lease expiry can free its runs
            pid = int(parts[1])
            if (pid == me and owner not in _LIVE_OWNERS) or (pid != me and not _pid_alive(pid)):
                dead.append(owner)
        return dead

    async def execute(self, run: RunRecord) -> None:
        # One span per execution (a run that suspends and resumes has several).
        with self.runtime.tracer.span(f"run {run.agent}", **{
                "threshold.run_id": run.run_id, "threshold.agent": run.agent,
                "threshold.agent_version": run.agent_version}):
            await self._execute(run)

    async def _execute(self, run: RunRecord) -> None:
        rt, store = self.runtime, self.store
        definition = rt.definition(run.agent, run.agent_version)
        if definition is None:
            await store.finish_run(run.run_id, status="stranded", now=to_iso(rt.clock.now()),
                                   error=f"no deployed definition of {run.agent} "
                                         f"version {run.agent_version}")
            return
        ctx = RunContext(rt, run, *await self._journal(run.run_id))
        try:
            argument: Any = run.input
            if definition.input_type is not None:
                argument = definition.input_type.model_validate(run.input)
            result = await definition.fn(ctx, argument)
        except Suspend:
            await store.suspend_run(run.run_id, owner=self.owner, now=to_iso(rt.clock.now()))
            return
        except RunKilled as exc:
            await store.finish_run(run.run_id, status="killed", now=to_iso(rt.clock.now()),
                                   error=str(exc))
            return
        except asyncio.CancelledError:
            task = asyncio.current_task()
            # Only the kill watcher's cancellation ends here; a worker shutdown propagates.
            if run.run_id not in self._kill_cancelled or task is None or task.uncancel() > 0:
                raise
            await store.finish_run(run.run_id, status="killed", now=to_iso(rt.clock.now()),
                                   error="stopped by the kill switch while executing")
            return
        except NondeterminismError as exc:
            await self._fail(run, exc, "nondeterminism")
            return
        except Exception as exc:
            await self._fail(run, exc, "error")
            return
        self._steps_cache.pop(run.run_id, None)
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
        await store.finish_run(run.run_id, status="completed", now=to_iso(rt.clock.now()),
                               result=result)

    async def _journal(self, run_id: str) -> tuple[dict[int, StepRecord], frozenset[int]]:
        """The run's journal: from this worker's cache when no one else wrote to it since
        (the run context appends to the cached dict as it records), else from the store."""
        last, count, open_crossings = await self.store.journal_head(run_id)
        steps = self._steps_cache.get(run_id)
        if steps is None or max(steps, default=0) != last or len(steps) != count:
            steps = await self.store.load_steps(run_id)
            self._steps_cache[run_id] = steps
        return steps, frozenset(open_crossings)

    async def _fail(self, run: RunRecord, exc: Exception, kind: str) -> None:
        self._steps_cache.pop(run.run_id, None)
        if isinstance(exc, StoreError) and await self._lost_lease(run):
            return  # another worker took the run over (our lease lapsed); it finishes it
        now = to_iso(self.runtime.clock.now())
        detail = "".join(traceback.format_exception_only(exc)).strip()
        await self.store.append_event(EventRecord(run.run_id, f"run.{kind}", {
            "error": detail, "type": type(exc).__name__}, now))
        await self.store.finish_run(run.run_id, status="failed", now=now, error=detail)

    async def _lost_lease(self, run: RunRecord) -> bool:
        current = await self.store.get_run(run.run_id)
        return current is None or current.lease_owner != self.owner


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
