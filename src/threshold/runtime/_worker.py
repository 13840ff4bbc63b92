"""The worker loop: fire due timers, claim ready runs, execute them to their next wait.

A worker resumes unfinished runs by itself: runs leased by a dead process (same host, pid
gone, or a crashed runtime in this process) or with an expired lease are claimed again.
"""

from __future__ import annotations

import asyncio
import os
import socket
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from threshold.clock import VirtualClock, from_iso, to_iso
from threshold.errors import NondeterminismError, RunKilled, Suspend
from threshold.runtime._context import RunContext
from threshold.runtime._runtime import Runtime
from threshold.store import EventRecord, RunRecord

# Runtimes alive in this process, by owner id: a crashed in-process runtime is not here.
_LIVE_OWNERS: set[str] = set()
_CLOCK_META = "clock.virtual_now"


class Worker:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.owner = runtime.owner

    async def run_until_idle(self) -> int:
        _LIVE_OWNERS.add(self.owner)
        try:
            await self._restore_virtual_time()
            executed = 0
            while True:
                executed += await self._round()
                if await self._has_ready():
                    continue
                nxt = await self.store.next_timer_at()
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
                if await self._round():
                    continue
                nxt = await self.store.next_timer_at()
                if nxt is not None and isinstance(self.runtime.clock, VirtualClock):
                    await self._advance_to(nxt)
                    continue
                await asyncio.sleep(poll_seconds)
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
            limit=rt.concurrency, dead_owners=await self._dead_owners())
        if not claimed:
            return 0
        async with asyncio.TaskGroup() as group:
            for run in claimed:
                group.create_task(self.execute(run))
        return len(claimed)

    async def _has_ready(self) -> bool:
        counts = await self.store.count_runs()
        return counts.get("ready", 0) > 0

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

    async def _dead_owners(self) -> list[str]:
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
        rt, store = self.runtime, self.store
        definition = rt.definition(run.agent, run.agent_version)
        if definition is None:
            await store.finish_run(run.run_id, status="stranded", now=to_iso(rt.clock.now()),
                                   error=f"no deployed definition of {run.agent} "
                                         f"version {run.agent_version}")
            return
        steps = await store.load_steps(run.run_id)
        unfinished = frozenset(c.seq for c in await store.list_crossings(run.run_id)
                               if c.seq not in steps)
        ctx = RunContext(rt, run, steps, unfinished)
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
        except NondeterminismError as exc:
            await self._fail(run, exc, "nondeterminism")
            return
        except Exception as exc:
            await self._fail(run, exc, "error")
            return
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
        await store.finish_run(run.run_id, status="completed", now=to_iso(rt.clock.now()),
                               result=result)

    async def _fail(self, run: RunRecord, exc: Exception, kind: str) -> None:
        now = to_iso(self.runtime.clock.now())
        detail = "".join(traceback.format_exception_only(exc)).strip()
        await self.store.append_event(EventRecord(run.run_id, f"run.{kind}", {
            "error": detail, "type": type(exc).__name__}, now))
        await self.store.finish_run(run.run_id, status="failed", now=now, error=detail)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
