"""A run waiting on a guarded 30-day timer, for the restart test.

    python -m procs.state_timer DB arm      # start the run; die (os._exit) once it waits
    python -m procs.state_timer DB resume   # a new runtime on the same file fires the timer

``resume`` prints one JSON line with the run's status and result and the virtual time.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime, timedelta
from typing import Any

from threshold import RunContext, Runtime, VirtualClock, open_store
from threshold.clock import to_iso
from threshold.patterns.state_machine import StateMachine

RENEWAL = StateMachine("renewal", ["init", "offer_sent", "expired", "closed"],
                       {"init": {"offer_sent"}, "offer_sent": {"expired", "closed"},
                        "expired": {"closed"}}, "init", terminal={"closed"})
RUN_ID = "renewal-42"


class DieWhenWaiting:
    """Kills the process the moment the worker would advance time past the armed timer."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def next_due(self) -> datetime | None:
        run = await self.runtime.store.get_run(RUN_ID)
        if run is not None and run.status == "waiting":
            os._exit(0)
        return None

    async def act(self, now: datetime) -> int:
        return 0


def build(db: str) -> Runtime:
    rt = Runtime(open_store(f"sqlite:///{db}"), clock=VirtualClock())

    @rt.agent("renewal")
    async def renewal(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        row = await RENEWAL.apply(ctx, ctx.run_id, 0, "offer_sent", {"pct": 10})
        fate = await RENEWAL.sleep(ctx, row, timedelta(days=30), purpose="offer_expiry")
        if fate == "fired":
            row = await RENEWAL.apply(ctx, ctx.run_id, row.version, "expired")
        return {"timer": fate, "state": row.state, "version": row.version}

    return rt


async def main(db: str, mode: str) -> None:
    rt = build(db)
    if mode == "arm":
        rt.actors.append(DieWhenWaiting(rt))
        await rt.start("renewal", {}, run_id=RUN_ID)
    await rt.run_until_idle()
    run = await rt.store.get_run(RUN_ID)
    assert run is not None
    print(json.dumps({"status": run.status, "result": run.result,
                      "now": to_iso(rt.clock.now())}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
