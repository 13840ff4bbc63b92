"""Runs: idempotent starts, determinism from the seed, nondeterminism detection, pinning."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from helpers import Ledger, offer_boundary, offer_json, scripted_runtime
from threshold import RunContext, Runtime, VirtualClock, open_store
from threshold.errors import SchemaVersionError
from threshold.replay import stranded_runs
from threshold.store import SCHEMA_VERSION


def sim_portfolio(url: str, seed_base: int, model: str = "sim:chaos") -> dict[str, Any]:
    """Run 30 runs with two boundaries and a timer; return every journal row that matters."""
    store = open_store(url)
    runtime = Runtime(store, clock=VirtualClock(), default_model=model)
    ledger = Ledger()
    boundary = offer_boundary(ledger)

    @runtime.agent("p")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> Any:
        first = await ctx.cross(boundary, {"c": inp["c"]})
        await ctx.sleep(timedelta(days=inp["wait"]))
        second = await ctx.cross(boundary, {"c": inp["c"] + "-again"})
        return [first.outcome, second.outcome, ctx.now().isoformat()]

    async def go() -> dict[str, Any]:
        for i in range(30):
            await runtime.start("p", {"c": f"c{i}", "wait": i % 7}, run_id=f"r{i}",
                                seed=seed_base + i)
        await runtime.run_until_idle()
        return {
            "runs": [(r.run_id, r.status, r.result) for r in await store.list_runs()],
            "attempts": [(a.crossing_id, a.attempt, a.kind, a.proposal_hash, a.raw, a.at)
                         for a in await store.list_attempts()],
            "verdicts": [(v.crossing_id, v.attempt, v.verifier, v.verdict, v.code)
                         for v in await store.list_verdicts()],
            "effects": sorted(ledger.calls),
        }

    return asyncio.run(go())


def test_same_seed_reproduces_the_whole_journal(tmp_path: Path) -> None:
    """Promise 5: two simulations from the same seed write identical journals."""
    first = sim_portfolio(f"sqlite:///{tmp_path / 'a.db'}", 7)
    second = sim_portfolio(f"sqlite:///{tmp_path / 'b.db'}", 7)
    assert first == second
    assert len(first["attempts"]) > 60  # the chaos profile forced retries


def test_another_seed_changes_the_proposals(tmp_path: Path) -> None:
    """Seeds matter: a different seed gives a different journal."""
    assert sim_portfolio("memory://", 7)["attempts"] != sim_portfolio("memory://", 8)["attempts"]


def test_starting_a_run_twice_is_idempotent() -> None:
    """A second start with the same run id neither duplicates nor resets the run."""
    runtime, _ = scripted_runtime([offer_json()])
    ledger = Ledger()
    boundary = offer_boundary(ledger)

    @runtime.agent("one")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> str:
        return (await ctx.cross(boundary, {"c": "x"})).outcome

    async def go() -> None:
        await runtime.start("one", {}, run_id="same")
        await runtime.run_until_idle()
        await runtime.start("one", {}, run_id="same")
        await runtime.run_until_idle()
        runs = await runtime.store.list_runs()
        assert [(r.run_id, r.status) for r in runs] == [("same", "completed")]

    asyncio.run(go())
    assert ledger.calls == ["same/1/offer"]


def test_changed_code_raises_nondeterminism_at_the_first_diverging_step(tmp_path: Path) -> None:
    """Re-executing a run whose code changed fails it with the step and both operations."""
    url = f"sqlite:///{tmp_path / 'nd.db'}"
    runtime, _ = scripted_runtime([offer_json()], url)
    boundary = offer_boundary(Ledger())

    @runtime.agent("a")
    async def v1(ctx: RunContext, inp: dict[str, Any]) -> None:
        await ctx.cross(boundary, {"c": "x"})
        await ctx.receive("go")

    async def first() -> None:
        await runtime.start("a", {}, run_id="r")
        await runtime.run_until_idle()
        await runtime.deliver("r", "go", "m1", {})

    asyncio.run(first())
    changed, _ = scripted_runtime([offer_json()], url)

    @changed.agent("a")
    async def v2(ctx: RunContext, inp: dict[str, Any]) -> None:
        await ctx.step("lookup", lambda: 1)  # inserted before the recorded crossing
        await ctx.cross(boundary, {"c": "x"})

    async def second() -> None:
        await changed.run_until_idle()
        run = await changed.store.get_run("r")
        assert run is not None and run.status == "failed"
        assert "step 1" in (run.error or "") and "step:lookup" in (run.error or "")
        assert "cross:offer" in (run.error or "")

    asyncio.run(second())


def _deploy_v1_and_start(url: str, run_id: str) -> Runtime:
    """A runtime deploying agent ``a`` version 1 on ``url``, with one run of it started."""
    old, _ = scripted_runtime([offer_json()], url)

    @old.agent("a", version="1")
    async def v1(ctx: RunContext, inp: dict[str, Any]) -> str:
        return "served by 1"

    asyncio.run(old.start("a", {}, run_id=run_id))
    return old


def test_a_worker_leaves_runs_of_versions_it_does_not_deploy(tmp_path: Path) -> None:
    """Promise 7 in a rolling deploy: a worker with only version 2 neither runs nor strands
    a version 1 run; `runs stranded` reports it while no deployment serves it, and a
    worker that has version 1 takes it."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    old = _deploy_v1_and_start(url, "r")
    new, _ = scripted_runtime([offer_json()], url)

    @new.agent("a", version="2")
    async def v2(ctx: RunContext, inp: dict[str, Any]) -> str:
        return "served by 2"

    async def go() -> None:
        await new.run_until_idle()
        run = await new.store.get_run("r")
        assert run is not None and (run.status, run.lease_owner) == ("ready", None)
        stranded = await stranded_runs(new.store, new)
        assert [(s.run_id, s.reasons[0]) for s in stranded] == [
            ("r", "agent a version 1 is not deployed (deployed: 2)")]
        await old.run_until_idle()
        run = await old.store.get_run("r")
        assert run is not None and (run.status, run.result) == ("completed", "served by 1")

    asyncio.run(go())


@pytest.mark.parametrize("found", [0, SCHEMA_VERSION + 1])
def test_a_database_of_another_schema_version_is_refused_clearly(tmp_path: Path,
                                                                 found: int) -> None:
    """Opening a journal written by an older or newer schema names both versions."""
    path = tmp_path / "old.db"
    asyncio.run(open_store(f"sqlite:///{path}").close())
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = ?", (found,))
    db.commit()
    db.close()
    with pytest.raises(SchemaVersionError) as info:
        open_store(f"sqlite:///{path}")
    assert info.value.found == found and info.value.expected == SCHEMA_VERSION
    assert ("older" if found < SCHEMA_VERSION else "newer") in str(info.value)


def test_an_old_schema_migrates_when_asked(tmp_path: Path) -> None:
    """migrate=True upgrades an empty version-0 journal to the current schema."""
    path = tmp_path / "zero.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (0)")
    db.commit()
    db.close()
    store = open_store(f"sqlite:///{path}", migrate=True)
    assert asyncio.run(store.list_runs()) == []
    version = sqlite3.connect(path).execute("SELECT version FROM schema_version").fetchone()
    assert version == (SCHEMA_VERSION,)


def test_timeline_json_is_serializable(tmp_path: Path) -> None:
    """`runs show --json` data round-trips through JSON."""
    from threshold.timeline import run_timeline

    runtime, _ = scripted_runtime([offer_json()])
    boundary = offer_boundary(Ledger())

    @runtime.agent("one")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> str:
        return (await ctx.cross(boundary, {"c": "<script>"})).outcome

    async def go() -> Any:
        await runtime.start("one", {}, run_id="r1")
        await runtime.run_until_idle()
        return await run_timeline(runtime.store, "r1")

    timeline = asyncio.run(go())
    assert timeline is not None
    data = json.loads(json.dumps(timeline.to_dict(), default=str))
    assert data["run"]["status"] == "completed"
    assert any(e["kind"] == "crossing.committed" for e in data["entries"])


def test_a_run_nobody_serves_does_not_hold_shared_virtual_time(tmp_path: Path) -> None:
    """A serving worker on a virtual clock moves time on past a ready run of a version it
    does not deploy (no worker sharing its time does), so its own sleeping run finishes."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    _deploy_v1_and_start(url, "unserved")
    new, _ = scripted_runtime([offer_json()], url)

    @new.agent("b", version="1")
    async def sleeper(ctx: RunContext, inp: dict[str, Any]) -> str:
        await ctx.sleep(timedelta(days=3))
        return "woke"

    async def go() -> tuple[str, str]:
        await new.start("b", {}, run_id="sleeper")

        async def finished() -> bool:
            run = await new.store.get_run("sleeper")
            return run is not None and run.status == "completed"

        done = False

        def stop() -> bool:
            return done

        server = asyncio.create_task(new.serve(poll_seconds=0.02, stop=stop))
        for _ in range(500):  # up to ~10 s of real time; it takes milliseconds
            if await finished():
                break
            await asyncio.sleep(0.02)
        done = True
        await server
        sleeper_run = await new.store.get_run("sleeper")
        unserved = await new.store.get_run("unserved")
        assert sleeper_run is not None and unserved is not None
        return sleeper_run.status, unserved.status

    assert asyncio.run(go()) == ("completed", "ready")
