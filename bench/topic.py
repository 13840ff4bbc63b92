"""Events per second appended to a durable topic and consumed with durable offsets, on
SQLite WAL, against the raw-sqlite floor of this run.

The floor is one INSERT plus one COMMIT per event on a plain table with the same pragmas
(WAL, synchronous=NORMAL), in this process. Measured, as medians over the repeats:

- ``append_eps``: ``Topic.publish``, one durable append (one transaction) per event;
- ``append_batch_eps``: ``Topic.publish_many``, ``--batch`` events per transaction;
- ``consume_eps``: a deterministic consumer (a running total per key, kept in the
  consumer's state) committing its offset and state once per ``--batch`` events;
- ``consume_per_event_eps``: the same consumer committing after every event;
- ``consume_effect_eps``: per ``--batch`` commits, with one keyed effect per event
  (intent and result recorded: two writes per event).

Batching is what makes it fast: appending and consuming one transaction per event cannot
beat the floor, which is one transaction per event.

    python bench/topic.py [--events 2000] [--batch 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from threshold.effects import EffectContext
from threshold.patterns.topics import Consumer, Delivery, Outgoing, Topic
from threshold.store import SQLiteStore, Store

KEYS = 50


def payload(i: int) -> dict[str, Any]:
    return {"customer": f"c{i % KEYS}", "amount": i % 97, "kind": "usage"}


def floor_eps(path: Path, n: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE t (topic TEXT, offset_ INTEGER, payload TEXT, "
               "PRIMARY KEY (topic, offset_))")
    started = time.perf_counter()
    for i in range(n):
        db.execute("BEGIN")
        db.execute("INSERT INTO t VALUES (?, ?, ?)", ("t", i + 1, json.dumps(payload(i))))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return n / elapsed


def open_sqlite(path: Path) -> Store:
    return SQLiteStore(str(path))


async def append_eps(path: Path, n: int) -> float:
    store = open_sqlite(path)
    topic = Topic(store, "events")
    started = time.perf_counter()
    for i in range(n):
        await topic.publish(payload(i), key=f"c{i % KEYS}", producer="bench")
    elapsed = time.perf_counter() - started
    await store.close()
    return n / elapsed


async def append_batch_eps(path: Path, n: int, batch: int) -> float:
    store = open_sqlite(path)
    topic = Topic(store, "events")
    started = time.perf_counter()
    for lo in range(0, n, batch):
        await topic.publish_many((Outgoing(payload(i), key=f"c{i % KEYS}")
                                  for i in range(lo, min(lo + batch, n))), producer="bench")
    elapsed = time.perf_counter() - started
    await store.close()
    return n / elapsed


async def total(delivery: Delivery) -> None:
    state = delivery.state
    customer = delivery.payload["customer"]
    state[customer] = state.get(customer, 0) + delivery.payload["amount"]


async def total_with_effect(delivery: Delivery) -> None:
    async def note(effect: EffectContext) -> int:
        return int(delivery.payload["amount"])

    await total(delivery)
    await delivery.effect("note", note)


async def consume_eps(path: Path, n: int, batch: int,
                      handler: Callable[[Delivery], Awaitable[None]], name: str) -> float:
    """Consume a topic of ``n`` events (appended beforehand, in batches, untimed)."""
    store = open_sqlite(path)
    topic = Topic(store, "events")
    for lo in range(0, n, 500):
        await topic.publish_many(Outgoing(payload(i)) for i in range(lo, min(lo + 500, n)))
    consumer = Consumer(store, topic, name, handler, batch_size=batch, initial_state={})
    started = time.perf_counter()
    done = await consumer.run()
    elapsed = time.perf_counter() - started
    assert done == n, (done, n)
    expected = sum(payload(i)["amount"] for i in range(n))
    assert sum((await consumer.position()).state.values()) == expected
    await store.close()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n, batch = args.events, args.batch
    runs: dict[str, list[float]] = {k: [] for k in (
        "floor", "append", "append_batch", "consume", "consume_per_event", "consume_effect")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for r in range(args.repeats):
            # Interleaved, so machine noise hits the floor and the topic alike.
            runs["floor"].append(floor_eps(folder / f"floor-{r}.db", n))
            runs["append"].append(asyncio.run(append_eps(folder / f"a-{r}.db", n)))
            runs["append_batch"].append(asyncio.run(
                append_batch_eps(folder / f"ab-{r}.db", n, batch)))
            runs["consume"].append(asyncio.run(
                consume_eps(folder / f"c-{r}.db", n, batch, total, "totals")))
            runs["consume_per_event"].append(asyncio.run(
                consume_eps(folder / f"c1-{r}.db", n, 1, total, "totals")))
            runs["consume_effect"].append(asyncio.run(
                consume_eps(folder / f"ce-{r}.db", n, batch, total_with_effect, "noted")))
    med = {k: statistics.median(v) for k, v in runs.items()}
    floor = med["floor"]
    result = {
        "append_eps": round(med["append"]),
        "consume_eps": round(med["consume"]),
        "floor_eps": round(floor),
        "append_ratio": round(med["append"] / floor, 2),
        "consume_ratio": round(med["consume"] / floor, 2),
        "append_batch_eps": round(med["append_batch"]),
        "append_batch_ratio": round(med["append_batch"] / floor, 2),
        "consume_per_event_eps": round(med["consume_per_event"]),
        "consume_per_event_ratio": round(med["consume_per_event"] / floor, 2),
        "consume_effect_eps": round(med["consume_effect"]),
        "consume_effect_ratio": round(med["consume_effect"] / floor, 2),
        "batch": batch, "events": n, "repeats": args.repeats,
    }
    print(f"floor {floor:.0f} ev/s (INSERT+COMMIT); append {med['append']:.0f} ev/s, "
          f"batched {med['append_batch']:.0f}; consume {med['consume']:.0f} ev/s "
          f"(offset per {batch}), {med['consume_per_event']:.0f} (offset per event), "
          f"{med['consume_effect']:.0f} (one keyed effect per event)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
