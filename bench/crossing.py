"""Median µs per durable crossing on SQLite WAL, against the raw-sqlite floor of this run.

A crossing here: the sim proposer, the schema check plus two verifiers, one effect, all
journaled so that it survives a process crash. The floor is one INSERT plus one COMMIT on a
plain table with the same pragmas (WAL, synchronous=NORMAL), measured in the same process.
A crossing has three steps (propose, verify, commit), so the ratio divides by three floors.

    python bench/crossing.py [--crossings 400] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from threshold import (
    RunContext,
    Runtime,
    VirtualClock,
    open_store,
)
from threshold.models import ModelRegistry
from workload import BOUNDARY, error_free_sim

STEPS_PER_CROSSING = 3


def make_runtime(path: Path) -> Runtime:
    models = ModelRegistry()
    sim = error_free_sim()
    models.add("sim", sim)
    runtime = Runtime(open_store(f"sqlite:///{path}"), clock=VirtualClock(), models=models,
                      default_model="sim")

    @runtime.agent("bench")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> int:
        for i in range(inp["n"]):
            await ctx.cross(BOUNDARY, {"c": i})
        return int(inp["n"])

    return runtime


async def crossings_us(folder: Path, n: int, tag: str) -> float:
    runtime = make_runtime(folder / f"cross-{tag}.db")
    await runtime.start("bench", {"n": n}, run_id="r")
    started = time.perf_counter()
    await runtime.run_until_idle()
    elapsed = time.perf_counter() - started
    await runtime.store.close()
    return elapsed / n * 1e6


async def concurrent_cps(folder: Path, runs: int, per_run: int, tag: str) -> float:
    runtime = make_runtime(folder / f"conc-{tag}.db")
    runtime.concurrency = runs
    for i in range(runs):
        await runtime.start("bench", {"n": per_run}, run_id=f"r{i}", seed=i)
    started = time.perf_counter()
    await runtime.run_until_idle()
    elapsed = time.perf_counter() - started
    await runtime.store.close()
    return runs * per_run / elapsed


def floor_us(folder: Path, n: int, tag: str) -> float:
    db = sqlite3.connect(folder / f"floor-{tag}.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
    payload = json.dumps({"action": "renew", "discount_pct": 10})
    started = time.perf_counter()
    for i in range(n):
        db.execute("BEGIN")
        db.execute("INSERT INTO t VALUES (?, ?)", (f"k{i}", payload))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crossings", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    crossing, floor, concurrent = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for r in range(args.repeats):
            # Interleave, so machine noise hits the floor and the runtime alike.
            floor.append(floor_us(folder, args.crossings * STEPS_PER_CROSSING, str(r)))
            crossing.append(asyncio.run(crossings_us(folder, args.crossings, str(r))))
            concurrent.append(asyncio.run(concurrent_cps(folder, 100, 10, str(r))))
    median_us, floor_med = statistics.median(crossing), statistics.median(floor)
    result = {
        "median_us": round(median_us, 1),
        "floor_us": round(floor_med, 1),
        "floor_steps_per_crossing": STEPS_PER_CROSSING,
        "ratio": round(median_us / (floor_med * STEPS_PER_CROSSING), 2),
        "ratio_to_one_floor_write": round(median_us / floor_med, 2),
        "crossings_per_s_single_run": round(1e6 / median_us),
        "crossings_per_s_100_concurrent_runs": round(statistics.median(concurrent)),
        "repeats": args.repeats,
    }
    print(f"crossing {median_us:.0f} µs, floor {floor_med:.1f} µs per INSERT+COMMIT, "
          f"{result['crossings_per_s_100_concurrent_runs']} crossings/s with 100 runs")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
