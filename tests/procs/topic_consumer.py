"""A consumer billing each order of topic ``orders`` into a sink, for crash tests.

    python -m procs.topic_consumer DB SINK [--crash WINDOW:NTH]

The sink is its own SQLite file with no uniqueness at all: every time the effect runs it
adds a row (key, performed flag), so the test sees duplicates if the runtime made any.
``--crash after_record:3`` ends the process with ``os._exit`` right after the third
effect was recorded, before the batch's offset is committed; ``after_effect:3`` right
after the third effect ran, before it was recorded. Prints one JSON line when done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

from threshold import open_store
from threshold.effects import EffectContext
from threshold.patterns.topics import Consumer, Delivery
from threshold.testing import CrashPlan


def sink_rows(sink: Path) -> list[tuple[str, int, int]]:
    db = sqlite3.connect(sink)
    db.execute("CREATE TABLE IF NOT EXISTS performs (key TEXT, performed INTEGER, "
               "amount INTEGER)")
    rows = db.execute("SELECT key, performed, amount FROM performs ORDER BY rowid").fetchall()
    db.close()
    return [(str(k), int(p), int(a)) for k, p, a in rows]


def bill_into(sink: Path) -> Callable[[Delivery], Awaitable[None]]:
    async def handle(delivery: Delivery) -> None:
        async def bill(effect: EffectContext) -> int:
            db = sqlite3.connect(sink, isolation_level=None)
            db.execute("CREATE TABLE IF NOT EXISTS performs (key TEXT, performed INTEGER, "
                       "amount INTEGER)")
            db.execute("INSERT INTO performs VALUES (?, ?, ?)",
                       (effect.key, effect.performed, delivery.payload["amount"]))
            db.close()
            return int(delivery.payload["amount"])

        delivery.state["billed"] = delivery.state.get("billed", 0) + await delivery.effect(
            "bill", bill)

    return handle


async def main(db: Path, sink: Path, crash: str | None) -> None:
    store = open_store(f"sqlite:///{db}")
    hook = None if crash is None else CrashPlan.parse(crash, mode="exit")
    consumer = Consumer(store, "orders", "biller", bill_into(sink), batch_size=10,
                        initial_state={}, crash_hook=hook)
    processed = await consumer.run()
    position = await consumer.position()
    print(json.dumps({"processed": processed, "offset": position.offset,
                      "state": position.state}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("db", type=Path)
    parser.add_argument("sink", type=Path)
    parser.add_argument("--crash")
    args = parser.parse_args()
    asyncio.run(main(args.db, args.sink, args.crash))
