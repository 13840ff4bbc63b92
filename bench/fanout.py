"""A 16-way fan-out against a single crossing in the same run, on SQLite WAL.

Each proposer call really sleeps 50 ms (``SimModel(latency_ms=(50, 50),
sleep=asyncio.sleep)``, no error modes), so a perfect fan-out costs one call. Every run
first crosses the boundary once (the floor), then fans out to 16 branches with
``scatter(..., concurrency=16)``: 16 journaled crossings plus the fan-out's journal events.
A second floor, 16 bare model calls gathered without the runtime, shows the proposer alone.

Reported: medians over the repetitions, the fan-out / single ratio (target: within 1.3x)
and the overhead per branch, ``(fan-out - single) / 16`` in ms. The last line is one JSON
object with the figures.

    python bench/fanout.py [--repeats 9] [--width 16] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from threshold import (
    Boundary,
    Prompt,
    RunContext,
    Runtime,
    VirtualClock,
    open_store,
)
from threshold.models import ErrorProfile, ModelRegistry, ModelRequest, SimModel
from threshold.patterns.scatter import Branch, GatherAll, scatter
from workload import Offer, cap

PROPOSER = Boundary("offer", output=Offer, verifiers=[cap],
                    prompt=Prompt("offer", "1", "Propose a renewal offer for {name}."))


async def bare_gather(model: SimModel, width: int) -> float:
    """The floor without the runtime: ``width`` model calls at once."""
    request = ModelRequest(messages=PROPOSER.prompt.render({"name": "x"}), output_type=Offer,
                           output_schema=Offer.model_json_schema())
    began = time.perf_counter()
    await asyncio.gather(*(model.complete(request) for _ in range(width)))
    return time.perf_counter() - began


async def measure(repeats: int, width: int, latency_ms: float, db: Path) -> dict[str, Any]:
    model = SimModel("v1", profile=ErrorProfile(), latency_ms=(latency_ms, latency_ms),
                     sleep=asyncio.sleep)
    models = ModelRegistry()
    models.add("sim:bench", model)
    rt = Runtime(open_store(f"sqlite:///{db}"), clock=VirtualClock(), models=models,
                 default_model="sim:bench")
    timings: dict[str, tuple[float, float]] = {}

    @rt.agent("fan")
    async def fan(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        began = time.perf_counter()
        single = await ctx.cross(PROPOSER, {"name": "single"})
        middle = time.perf_counter()
        branches = [Branch(f"b{i}", PROPOSER, {"name": f"c{i}"}) for i in range(width)]
        gathered = await scatter(ctx, "bench", branches, gather=GatherAll(), concurrency=width)
        timings[ctx.run_id] = (middle - began, time.perf_counter() - middle)
        return {"single": single.outcome, "accepted": len(gathered.chosen)}

    # One warm-up run (imports, schema caches, SQLite page cache), not reported.
    for i in range(repeats + 1):
        await rt.start("fan", {}, run_id=f"run-{i}", seed=i)
        await rt.run_until_idle()
        run = await rt.store.get_run(f"run-{i}")
        assert run is not None and run.status == "completed", run
        assert run.result == {"single": "committed", "accepted": width}, run.result
    bare = [await bare_gather(model, width) for _ in range(repeats)]
    await rt.store.close()
    rows = [timings[f"run-{i}"] for i in range(1, repeats + 1)]
    single = statistics.median(s for s, _ in rows)
    fanout = statistics.median(f for _, f in rows)
    return {
        "benchmark": "fanout", "width": width, "latency_ms": latency_ms, "repeats": repeats,
        "single_ms": round(single * 1000, 2), "fanout_ms": round(fanout * 1000, 2),
        "bare_gather_ms": round(statistics.median(bare) * 1000, 2),
        "ratio": round(fanout / single, 3),
        "ratio_median_per_run": round(statistics.median(f / s for s, f in rows), 3),
        "overhead_per_branch_ms": round((fanout - single) / width * 1000, 3),
        "target_ratio": 1.3, "within_target": fanout / single <= 1.3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(measure(args.repeats, args.width, args.latency_ms,
                                     Path(tmp) / "fanout.db"))
    print(f"single crossing      {result['single_ms']:8.2f} ms (median of {args.repeats})")
    print(f"{args.width}-way fan-out      {result['fanout_ms']:8.2f} ms")
    print(f"bare model gather    {result['bare_gather_ms']:8.2f} ms (no runtime)")
    print(f"ratio fan-out/single {result['ratio']:8.3f}x (target <= 1.3x)")
    print(f"overhead per branch  {result['overhead_per_branch_ms']:8.3f} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
