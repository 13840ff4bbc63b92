"""One crossing whose model answers with bytes that are not UTF-8: a malformed response,
a transport error this boundary may not retry. For the crash test of that window.

    python -m procs.transport_crash DB [--crash WINDOW:NTH]

Prints one JSON line: the crossing's outcome, attempts and reason, and how many model
calls this process made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from helpers import offer_boundary, offer_json, scripted_runtime
from threshold import RunContext, TransportPolicy
from threshold.testing import CrashPlan


async def main(db: str, crash: str | None) -> dict[str, Any]:
    runtime, model = scripted_runtime([b"\xff\xfe{", offer_json()], f"sqlite:///{db}",
                                      crash_hook=CrashPlan.parse(crash) if crash else None)
    boundary = offer_boundary(transport=TransportPolicy(max_retries=0))

    @runtime.agent("transport")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        crossing = await ctx.cross(boundary, {"c": "x"})
        return {"outcome": crossing.outcome, "attempts": crossing.attempts,
                "reason": crossing.reason}

    if await runtime.store.get_run("r") is None:
        await runtime.start("transport", {}, run_id="r")
    await runtime.run_until_idle()
    run = await runtime.store.get_run("r")
    await runtime.store.close()
    assert run is not None
    return {"status": run.status, "result": run.result, "model_calls": len(model.requests)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("--crash")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.db, args.crash))))
