"""Record the golden journals: ``python tests/golden/make_golden.py`` (from the repo root).

Runs ``golden.renewal`` for twelve customers on a virtual clock with the ``sim:chaos``
model (schema breaks, transport failures, policy breaches), a pricing lead who approves,
denies or ignores escalations, and customers who accept, decline or never reply; then
exports the journals to ``deterministic.json``. Re-record only on purpose: the checked-in
file is what the replay tests hold the agent code to.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from golden.agents import AGENT, Customer, World, register  # noqa: E402
from threshold import Runtime, VirtualClock, open_store  # noqa: E402
from threshold.replay import load_journals  # noqa: E402
from threshold.replay._export import dump_journals  # noqa: E402

RUNS = 12


async def record(db_url: str) -> list[str]:
    store = open_store(db_url)
    runtime = Runtime(store, clock=VirtualClock(), default_model="sim:chaos")
    register(runtime)
    replies: dict[str, str | None] = {}
    for i in range(RUNS):
        run_id = f"golden-{i:02d}"
        replies[run_id] = ("accept", "decline", None)[i % 3]
        await runtime.start(AGENT, Customer(customer_id=f"G{i:03d}", tenure_months=3 + 7 * i,
                                            monthly_charges=30.0 + 5 * i),
                            run_id=run_id, seed=1000 + i)
    runtime.actors.append(World(runtime, replies))
    await runtime.run_until_idle()
    ids = [r.run_id for r in await store.list_runs()]
    await store.close()
    return ids


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/golden.db"
        await record(url)
        store = open_store(url)
        dump_journals(await load_journals(store), out)
        await store.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main(HERE / "deterministic.json"))
