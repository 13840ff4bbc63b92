"""The durable crossing on PostgreSQL, against a raw psycopg floor of the same run; and the
throughput of 1, 2 and 4 ``threshold worker`` processes sharing one database.

A crossing: the sim proposer (error-free profile, so no retries), the schema check plus two
verifiers, one in-memory effect, journaled so that it survives a crash. It is timed one by
one inside a run and its write transactions are counted (two on the accepting path: the
proposal with its verdicts and the effect intent; then the effect result, the crossing's
end and the run step). The floor is one raw psycopg ``INSERT`` plus ``COMMIT`` into a plain
table of the same database, on the same driver and event loop, measured in the same run.
The ratio divides the median crossing by (median writes per crossing × median floor write).

Throughput: N worker processes (``threshold worker --agents postgres:agents``) serve runs
of one crossing each; the clock starts at the first ``create_run`` and stops when every
run has completed; the median of ``--repeats`` trials per N. The workers share the
machine's cores with PostgreSQL itself, so on a small machine more processes need not
mean more runs per second.

    THRESHOLD_TEST_PG_URL=postgresql://postgres@127.0.0.1:5432/test python bench/postgres.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

from threshold import (
    RunContext,
    Runtime,
    VirtualClock,
)
from threshold.store import open_store
from threshold.store._postgres import PostgresStore
from workload import BOUNDARY, error_free_sim

HERE = Path(__file__).parent
AGENT = "pg_bench"


# Per-crossing samples of the in-process measurement: (seconds, write transactions).
SAMPLES: list[tuple[float, int]] = []


def agents(runtime: Runtime) -> None:
    """The benchmark agent and its error-free sim model (``--agents postgres:agents``)."""
    sim = error_free_sim()
    runtime.models.add("sim", sim)

    @runtime.agent(AGENT)
    async def bench(ctx: RunContext, inp: dict[str, Any]) -> int:
        store = ctx.store
        for i in range(inp["n"]):
            writes = getattr(store, "write_transactions", 0)
            started = time.perf_counter()
            await ctx.cross(BOUNDARY, {"c": i})
            SAMPLES.append((time.perf_counter() - started,
                            getattr(store, "write_transactions", 0) - writes))
        return int(inp["n"])


@contextmanager
def fresh_schema(server: str) -> Iterator[str]:
    schema = f"bench_{secrets.token_hex(5)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in server else "?"
        yield f"{server}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


# the crossing and its floor ------------------------------------------------------------
async def crossing_samples(url: str, n: int, warmup: int) -> list[tuple[float, int]]:
    store = open_store(url)
    runtime = Runtime(store, clock=VirtualClock(), concurrency=1)
    agents(runtime)
    SAMPLES.clear()
    await runtime.start(AGENT, {"n": n + warmup}, run_id="cross")
    await runtime.run_until_idle()
    await store.close()
    return SAMPLES[warmup:]


async def floor_samples(url: str, n: int, warmup: int) -> list[float]:
    payload = json.dumps({"action": "renew", "discount_pct": 10})
    conn = await psycopg.AsyncConnection.connect(url)
    try:
        await conn.execute("CREATE TABLE floor (k TEXT PRIMARY KEY, v TEXT)")
        await conn.commit()
        out = []
        for i in range(n + warmup):
            started = time.perf_counter()
            await conn.execute("INSERT INTO floor VALUES (%s, %s)", (f"k{i}", payload))
            await conn.commit()
            out.append(time.perf_counter() - started)
        return out[warmup:]
    finally:
        await conn.close()


# throughput ----------------------------------------------------------------------------
def start_workers(url: str, n: int, concurrency: int) -> list[subprocess.Popen[str]]:
    cmd = [sys.executable, "-m", "threshold.cli._main", "worker", "--db", url, "--agents",
           "postgres:agents", "--concurrency", str(concurrency), "--poll-seconds", "0.5",
           "--grace-seconds", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(n)]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "serving" not in line:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"worker did not start: {line} {err}")
    return procs


async def throughput(url: str, workers: int, runs: int, concurrency: int) -> float:
    open_store(url)  # create the schema before the workers race to
    procs = start_workers(url, workers, concurrency)
    store = PostgresStore(url)
    runtime = Runtime(store)
    agents(runtime)
    try:
        started = time.perf_counter()
        for i in range(runs):
            await runtime.start(AGENT, {"n": 1}, run_id=f"r{i:05d}", seed=i)
        while (await store.count_runs()).get("completed", 0) < runs:
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.communicate(timeout=30)
        await store.close()
    return runs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=os.environ.get("THRESHOLD_TEST_PG_URL", ""))
    parser.add_argument("--crossings", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", type=int, default=400, help="runs per throughput trial")
    parser.add_argument("--concurrency", type=int, default=16, help="per worker process")
    args = parser.parse_args()
    if not args.url:
        parser.error("set THRESHOLD_TEST_PG_URL or pass --url (scripts/ensure-postgres.sh)")
    warmup = 20
    crossings: list[tuple[float, int]] = []
    floors: list[float] = []
    for _ in range(args.repeats):
        # Interleaved, so machine noise hits the floor and the runtime alike.
        with fresh_schema(args.url) as url:
            floors += asyncio.run(floor_samples(url, args.crossings * 2, warmup))
        with fresh_schema(args.url) as url:
            crossings += asyncio.run(crossing_samples(url, args.crossings, warmup))
    crossing_us = statistics.median(s for s, _ in crossings) * 1e6
    floor_us = statistics.median(floors) * 1e6
    writes = statistics.median(w for _, w in crossings)
    ratio = crossing_us / (writes * floor_us)
    print(f"crossing: median {crossing_us:.0f} µs over {len(crossings)} crossings, "
          f"{writes:g} write transactions each")
    print(f"floor: median {floor_us:.0f} µs per raw psycopg INSERT+COMMIT "
          f"({len(floors)} writes)")
    print(f"ratio: crossing / ({writes:g} × floor write) = {ratio:.2f} "
          f"(crossing / one floor write = {crossing_us / floor_us:.2f})")
    trials: dict[int, list[float]] = {1: [], 2: [], 4: []}
    for _ in range(args.repeats):
        for n in trials:  # interleaved, like the crossing and its floor
            with fresh_schema(args.url) as url:
                trials[n].append(asyncio.run(throughput(url, n, args.runs, args.concurrency)))
    rates = {str(n): round(statistics.median(t), 1) for n, t in trials.items()}
    for n, t in trials.items():
        print(f"throughput: {n} worker process(es) x concurrency {args.concurrency}: median "
              f"{rates[str(n)]} runs/s of {len(t)} trials (1 crossing per run; "
              f"min {min(t):.0f}, max {max(t):.0f})")
    print(json.dumps({
        "bench": "postgres",
        "crossing_median_us": round(crossing_us, 1),
        "floor_write_median_us": round(floor_us, 1),
        "writes_per_crossing": writes,
        "ratio_vs_floor": round(ratio, 2),
        "ratio_floor": "median crossing / (writes_per_crossing x median raw INSERT+COMMIT)",
        "ratio_vs_one_floor_write": round(crossing_us / floor_us, 2),
        "throughput_runs_per_s": rates,
        "throughput_trials": args.repeats,
        "runs_per_trial": args.runs,
        "concurrency_per_worker": args.concurrency,
        "crossings_measured": len(crossings),
        "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
