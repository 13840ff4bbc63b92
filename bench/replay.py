"""Deterministic replay throughput, in crossings per second, on SQLite.

Records a workload (runs of several crossings each: the sim proposer, the schema check and
two verifiers, a commit per crossing, some retries) into a SQLite file, then replays every
run against its journal with the recorded proposals (``threshold.replay.replay_runs``).
By default that is the verify-only fast path: read the journals, re-execute the agent code
against them in memory, re-parse and re-verify every recorded proposal; ``--full-engine``
measures the full engine instead (a scratch store, the whole crossing engine per crossing,
then a step-by-step diff). The floor, measured in the same process on the same file, is
reading the same journal rows (runs, steps, crossings, attempts, verdicts, effects) raw
with ``sqlite3``: replay cannot be faster than reading what it replays. The first
execution of the same workload (recording it, once) is reported beside it.

    python bench/replay.py [--runs 200] [--crossings-per-run 5] [--repeats 5] [--full-engine]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from threshold import (
    Accept,
    Boundary,
    EffectContext,
    Prompt,
    Reject,
    RunContext,
    Runtime,
    VerifyContext,
    VirtualClock,
    open_store,
    verifier,
)
from threshold.models import ErrorProfile, ModelRegistry, SimModel
from threshold.replay import replay_runs

TARGET = 20_000  # crossings/s


class Quote(BaseModel):
    discount_pct: int = Field(ge=0, le=40)
    term_months: int = Field(ge=1, le=36)


@verifier("cap", version="1")
def cap(q: Quote, ctx: VerifyContext) -> Accept | Reject:
    return Accept() if q.discount_pct <= 30 else Reject("policy.cap", "over 30")


@verifier("term", version="1")
def term(q: Quote, ctx: VerifyContext) -> Accept | Reject:
    return Accept() if q.term_months >= 3 else Reject("rule.term", "too short")


async def send(q: Quote, effect: EffectContext) -> dict[str, Any]:
    return {"id": effect.key}


QUOTE = Boundary("quote", output=Quote, prompt=Prompt("quote", "1", "Quote for {n}."),
                 verifiers=[cap, term], commit=send)


def register(per_run: int) -> Any:
    def define(runtime: Runtime) -> None:
        @runtime.agent("bench.replay", version="1")
        async def agent(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
            committed = 0
            for i in range(per_run):
                crossing = await ctx.cross(QUOTE, {"n": f"{inp['n']}.{i}"})
                committed += crossing.committed
            return {"committed": committed}

    return define


async def record(url: str, runs: int, per_run: int) -> int:
    store = open_store(url)
    models = ModelRegistry()
    models.add("sim:bench", SimModel("v1", profile=ErrorProfile(schema_break=0.05)))
    runtime = Runtime(store, clock=VirtualClock(), models=models, default_model="sim:bench")
    register(per_run)(runtime)
    for n in range(runs):
        await runtime.start("bench.replay", {"n": n}, run_id=f"bench-{n:05d}", seed=n)
    await runtime.run_until_idle()
    crossings = len(await store.list_crossings())
    await store.close()
    return crossings


async def replay_once(url: str, per_run: int, fast: bool) -> tuple[float, int, Counter[str]]:
    store = open_store(url)
    try:
        started = time.perf_counter()
        outcomes = await replay_runs(store, None, register(per_run), fast=fast)
        elapsed = time.perf_counter() - started
    finally:
        await store.close()
    bad = [o.diff.run_id for o in outcomes if o.diff.diffs]
    if bad:
        raise SystemExit(f"replay is not deterministic for {bad[:3]}")
    return elapsed, len(outcomes), Counter(o.path for o in outcomes)


def floor_once(path: str) -> float:
    """Read every journal row replay reads, raw: the least a replay has to do."""
    db = sqlite3.connect(path)
    started = time.perf_counter()
    for table in ("runs", "steps", "crossings", "attempts", "verdicts", "effects"):
        for row in db.execute(f"SELECT * FROM {table}"):
            del row
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--crossings-per-run", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--full-engine", action="store_true",
                        help="measure the full engine instead of the verify-only fast path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "bench.db")
        url = f"sqlite:///{path}"
        started = time.perf_counter()
        crossings = asyncio.run(record(url, args.runs, args.crossings_per_run))
        record_s = time.perf_counter() - started
        replays, floors = [], []
        for _ in range(args.repeats):
            elapsed, runs, paths = asyncio.run(replay_once(url, args.crossings_per_run,
                                                           not args.full_engine))
            replays.append(elapsed)
            floors.append(floor_once(path))
    replay_s, floor_s = statistics.median(replays), statistics.median(floors)
    rate, floor_rate = crossings / replay_s, crossings / floor_s
    print(f"replayed {runs} runs ({paths['fast']} verify-only, {paths['full']} full engine), "
          f"{crossings} crossings: median {replay_s * 1000:.1f} ms "
          f"({rate:,.0f} crossings/s); raw read of the same rows {floor_s * 1000:.1f} ms "
          f"({floor_rate:,.0f} crossings/s); first execution {crossings / record_s:,.0f} "
          f"crossings/s; target {TARGET:,}/s")
    print(json.dumps({
        "crossings": crossings, "runs": runs, "repeats": args.repeats,
        "path": "full" if args.full_engine else "fast",
        "runs_by_path": {"fast": paths["fast"], "full": paths["full"]},
        "median_replay_s": round(replay_s, 4), "crossings_per_s": round(rate),
        "floor_read_s": round(floor_s, 5), "floor_crossings_per_s": round(floor_rate),
        "ratio_to_floor": round(replay_s / floor_s, 1),
        "first_execution_crossings_per_s": round(crossings / record_s),
        "target_crossings_per_s": TARGET,
        "meets_target": rate >= TARGET}))


if __name__ == "__main__":
    main()
