"""Issue 10's fault injection: four ``threshold worker`` processes work a renewal portfolio
on PostgreSQL in virtual time while a chaos loop SIGKILLs and replaces a random worker
every few seconds and restarts PostgreSQL once; the result equals an undisturbed run."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

from pgschema import fresh_schema, server_url
from procs.chaos_renewal import (
    TERMINAL,
    WorkerPool,
    outcomes,
    query,
    reference_run,
    restart_postgres,
    start_portfolio,
)
from support import require
from threshold import audit, open_store

CUSTOMERS = int(os.environ.get("THRESHOLD_CHAOS_CUSTOMERS", "500"))
SEED = 11
WORKERS = 4
KILL_EVERY_S = (2.0, 4.0)
RESTART_PG_AT = "2026-05-10"  # virtual date: mid-flight, after the product EOL event
DEADLINE_S = 600.0
CRM_TABLES = ("crm_signals", "crm_offers", "crm_contracts")


def _unfinished(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM runs WHERE status NOT IN "
                          f"({', '.join(repr(s) for s in TERMINAL)})")[0][0])


def _virtual_now(url: str) -> str:
    rows = query(url, "SELECT value FROM meta WHERE key = 'clock.virtual_now'")
    return str(rows[0][0]) if rows else ""


def _chaos(url: str, pool: WorkerPool) -> tuple[int, bool]:
    """Kill and replace workers until every run is finished; restart PostgreSQL once.
    Returns the number of kills and whether the restart happened."""
    rng = random.Random(SEED)
    began = time.monotonic()
    next_kill = began + rng.uniform(*KILL_EVERY_S)
    restarted = False
    while _unfinished(url):
        now = time.monotonic()
        assert now - began < DEADLINE_S, "the portfolio did not finish:\n" + pool.log_tail()
        exited = pool.supervise()
        assert not exited, "a worker exited by itself:\n" + "\n".join(exited)
        if not restarted and _virtual_now(url) >= RESTART_PG_AT:
            restart_postgres()
            restarted = True
        if now >= next_kill:
            pool.kill_one(rng)
            next_kill = now + rng.uniform(*KILL_EVERY_S)
        time.sleep(0.2)
    return len(pool.killed), restarted


async def _inspect(url: str) -> tuple[dict[str, tuple[str, int, int]], dict[str, str]]:
    """Check one finished portfolio; return its per-run outcomes and effect statuses."""
    store = open_store(url)
    try:
        counts = await store.count_runs()
        assert set(counts) == {"completed"}, counts
        report = await audit(store)
        assert report.ok, report.violations
        assert report.effects_pending == 0
        effects = await store.list_effects()
        assert all(e.status in ("done", "failed") for e in effects), [
            e.key for e in effects if e.status not in ("done", "failed")]
        done = {e.key for e in effects if e.status == "done"}
        for table in CRM_TABLES:
            keys = [str(r[0]) for r in query(url, f"SELECT effect_key FROM {table}")]
            assert len(keys) == len(set(keys)), f"{table} holds a key twice"
            assert set(keys) <= done, f"{table} holds writes no effect recorded"
        # Performed more than once only inside the outbox's crash window (killed between
        # doing and recording); the keyed CRM writes above absorb such a repeat.
        assert all(e.performed <= 2 for e in effects)
        repeats = sum(e.performed > 1 for e in effects)
        print(f"{url.rpartition('%3D')[2]}: {len(effects)} effects, {repeats} repeated")
        return await outcomes(store), {e.key: e.status for e in effects}
    finally:
        await store.close()


@pytest.mark.postgres
@pytest.mark.slow
def test_renewal_portfolio_survives_sigkills_and_a_database_restart(tmp_path: Path) -> None:
    """A portfolio worked by four workers that keep being SIGKILLed, through a PostgreSQL
    restart, completes every run with every effect done once, a clean audit, one contract
    per customer, and per-run outcomes equal to an undisturbed run of the same seed."""
    require(bool(os.environ.get("THRESHOLD_TEST_PG_URL")),
            "THRESHOLD_TEST_PG_URL is not set (scripts/ensure-postgres.sh prints it)")
    server_url()
    with fresh_schema() as reference_url:
        asyncio.run(reference_run(reference_url, CUSTOMERS, SEED))
        expected, expected_effects = asyncio.run(_inspect(reference_url))
        expected_contracts = sorted(query(reference_url, "SELECT customer_id, outcome, "
                                                         "discount_pct FROM crm_contracts"))
    assert len(expected) == CUSTOMERS

    with fresh_schema() as url:
        open_store(url)  # the schema exists before the workers start
        pool = WorkerPool(url, WORKERS, tmp_path, CUSTOMERS, SEED, "--concurrency", "8",
                          "--lease-seconds", "2", "--poll-seconds", "0.5")
        try:
            asyncio.run(start_portfolio(url, CUSTOMERS, SEED))
            kills, restarted = _chaos(url, pool)
        finally:
            codes = pool.stop()
        assert restarted, "the portfolio finished before PostgreSQL was restarted"
        assert kills >= 3, f"only {kills} workers were killed"
        assert codes == [0] * WORKERS, pool.log_tail()
        actual, effects = asyncio.run(_inspect(url))
        contracts = sorted(query(url, "SELECT customer_id, outcome, discount_pct FROM "
                                      "crm_contracts"))
    differences = {k: (expected.get(k), actual.get(k)) for k in expected.keys() | actual.keys()
                   if expected.get(k) != actual.get(k)}
    assert not differences, f"{len(differences)} runs differ: {sorted(differences.items())}"
    assert contracts == expected_contracts
    assert effects == expected_effects  # the same effects, done or failed alike
    print(f"{kills} kills, {pool.startup_failures} restarts of workers that met the "
          "database down at start-up")
