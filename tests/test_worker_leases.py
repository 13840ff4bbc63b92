"""Worker leases: renewed while a run executes, and a worker that lost its lease leaves the
run to the worker that took it over."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from threshold import RunContext, Runtime, VirtualClock, open_store
from threshold.clock import SystemClock, to_iso


def test_a_slow_run_keeps_its_lease(tmp_path: Path) -> None:
    """A run that executes for longer than the lease is not taken by another worker: the
    executing worker renews its lease while the run is in flight."""

    async def go() -> None:
        url = f"sqlite:///{tmp_path / 'leases.db'}"
        slow, other = (Runtime(open_store(url), lease_seconds=0.6, lease_clock=SystemClock())
                       for _ in range(2))

        async def agent(ctx: RunContext, inp: dict[str, Any]) -> str:
            await ctx.step("slow", asyncio.sleep, 1.8)
            return "done"

        for rt in (slow, other):
            rt.agent("slow")(agent)
        await slow.start("slow", {}, run_id="r1")
        executing = asyncio.create_task(slow.run_until_idle())
        stolen = []
        while not executing.done():
            await asyncio.sleep(0.2)
            stolen += await other.store.claim_runs(
                "thief", now=_now(), lease_until=_now(60), limit=1, dead_owners=[])
        await executing
        assert stolen == []
        run = await slow.store.get_run("r1")
        assert run is not None and (run.status, run.result) == ("completed", "done")
        for rt in (slow, other):
            await rt.store.close()

    asyncio.run(go())


def _now(plus: float = 0) -> str:
    return to_iso(SystemClock().now() + timedelta(seconds=plus))


def test_a_worker_that_lost_its_lease_does_not_fail_the_run(tmp_path: Path) -> None:
    """Worker A stalls past its lease; worker B takes the run over and completes it; when A
    wakes, its next journal write conflicts, and A walks away instead of marking the run
    failed."""

    async def go() -> None:
        url = f"sqlite:///{tmp_path / 'lost.db'}"
        gate = asyncio.Event()
        a_clock, b_clock = VirtualClock(), VirtualClock()
        a = Runtime(open_store(url), lease_clock=a_clock, lease_seconds=30)
        b = Runtime(open_store(url), lease_clock=b_clock, lease_seconds=30)

        def define(rt: Runtime, stall: bool) -> None:
            @rt.agent("job")
            async def job(ctx: RunContext, inp: dict[str, Any]) -> str:
                await ctx.step("first", lambda: 1)
                if stall:
                    await gate.wait()  # A stalls here, holding a lease that lapses
                await ctx.step("second", lambda: 2)
                return "by-a" if stall else "by-b"

        define(a, stall=True)
        define(b, stall=False)
        await a.start("job", {}, run_id="r1")
        stalled = asyncio.create_task(a.run_until_idle())
        while (await a.store.load_steps("r1")).get(1) is None:
            await asyncio.sleep(0.01)
        b_clock.advance(minutes=5)  # in B's eyes, A's 30 s lease is long gone
        await b.run_until_idle()
        gate.set()
        await stalled
        run = await a.store.get_run("r1")
        assert run is not None and (run.status, run.result) == ("completed", "by-b")
        assert await a.store.list_events("r1", kind="run.error") == []
        for rt in (a, b):
            await rt.store.close()

    asyncio.run(go())
