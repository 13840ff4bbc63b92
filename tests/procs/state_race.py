"""One of several processes racing to move one state row, for the CAS race test.

    python -m procs.state_race DB NAME ROUNDS GO_FILE

Says it is ready (GO_FILE.NAME.ready), waits until GO_FILE exists (so the racers start
together, none still importing while another runs), then ROUNDS times: reads the
row, yields briefly, and tries to toggle it (a <-> b) at the version it read. Prints one
JSON line: the versions this process wrote and how many of its writes were stale.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from threshold import open_store
from threshold.errors import StaleWriteError
from threshold.patterns.state_machine import StateMachine

TOGGLE = StateMachine("toggle", ["a", "b"], {"a": {"b"}, "b": {"a"}}, "a")


async def race(db: str, name: str, rounds: int, go: Path) -> dict[str, object]:
    go.with_name(f"{go.name}.{name}.ready").touch()
    while not go.exists():
        await asyncio.sleep(0.001)
    store = open_store(f"sqlite:///{db}")
    wins: list[int] = []
    stale = 0
    for _ in range(rounds):
        row = await TOGGLE.read(store, "row-1")
        await asyncio.sleep(0.0005)  # widen the read-to-write window so the racers collide
        target = "b" if row.state == "a" else "a"
        try:
            moved = await TOGGLE.apply(store, "row-1", row.version, target, {"by": name},
                                       actor=name)
        except StaleWriteError:
            stale += 1
            continue
        wins.append(moved.version)
    await store.close()
    return {"name": name, "wins": wins, "stale": stale}


if __name__ == "__main__":
    db, name, rounds, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    print(json.dumps(asyncio.run(race(db, name, rounds, go))))
