"""A three-step saga in a subprocess, for crash tests of compensation.

    python -m procs.saga_crash DB SINK [--crash WINDOW:NTH]

Steps ``reserve``, ``charge`` and ``notify`` write to the sink; ``reserve`` and ``charge``
register compensations. The test scripts the sink (``notify`` fails, say). With ``--crash``
the process dies with ``os._exit`` at that crash window (``after_record:2`` is right after
step 2's effect is recorded). Prints one JSON line with the run's final state when done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from procs.saga_sink import Sink
from threshold import RunContext, Runtime, VirtualClock, open_store
from threshold.errors import SagaAborted
from threshold.patterns.saga import CompensationRetry, Saga
from threshold.testing import CrashPlan

RUN_ID = "saga-1"


def build(db: Path, sink: Sink, crash: str | None) -> Runtime:
    hook = None if crash is None else CrashPlan.parse(crash, mode="exit")
    rt = Runtime(open_store(f"sqlite:///{db}"), clock=VirtualClock(), crash_hook=hook)

    @rt.agent("renewal-saga")
    async def renewal(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        saga = Saga(ctx, "renewal", retry=CompensationRetry(max_attempts=3))
        try:
            await saga.step("reserve", sink.effect("reserve"),
                            compensate=sink.compensation("release"))
            await saga.step("charge", sink.effect("charge"),
                            compensate=sink.compensation("refund"))
            await saga.step("notify", sink.effect("notify"))
        except SagaAborted as exc:
            return {"aborted": exc.step, "compensated": exc.compensated}
        await saga.complete()
        return {"completed": saga.steps}

    return rt


async def main(db: Path, sink_path: Path, crash: str | None) -> None:
    rt = build(db, Sink(sink_path), crash)
    await rt.start("renewal-saga", {}, run_id=RUN_ID)
    await rt.run_until_idle()
    run = await rt.store.get_run(RUN_ID)
    assert run is not None
    print(json.dumps({"status": run.status, "result": run.result, "error": run.error}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("db", type=Path)
    parser.add_argument("sink", type=Path)
    parser.add_argument("--crash")
    args = parser.parse_args()
    asyncio.run(main(args.db, args.sink, args.crash))
