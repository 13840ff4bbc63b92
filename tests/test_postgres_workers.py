"""Several ``threshold worker`` processes on one PostgreSQL store: they share the work, a
worker killed with SIGKILL loses nothing once its lease lapses, and NOTIFY wakes idle ones."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from pgschema import fresh_schema
from procs.pg_agent import AGENT, agents, create_sink
from threshold import Runtime, audit, open_store

HERE = Path(__file__).parent
LEASE_SECONDS = 2.0


def _worker(url: str, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "threshold.cli._main", "worker", "--db", url,
           "--agents", "procs.pg_agent:agents", *extra]
    return subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(HERE)})


@contextmanager
def _workers(url: str, n: int, *extra: str) -> Iterator[list[subprocess.Popen[str]]]:
    procs = [_worker(url, *extra) for _ in range(n)]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "serving pg_small@1" in line, (line, proc.stderr.read() if proc.stderr else "")


async def _start_runs(url: str, n: int, **inp: object) -> None:
    store = open_store(url)
    runtime = Runtime(store)
    agents(runtime)
    try:
        for i in range(n):
            await runtime.start(AGENT, {"c": f"c{i}", **inp}, run_id=f"r{i:03d}", seed=i)
    finally:
        await store.close()


def _query(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def _wait_until(condition: str, url: str, sql: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _query(url, sql)[0][0]:
            return
        time.sleep(0.05)
    counts = _query(url, "SELECT status, count(*) FROM runs GROUP BY status")
    pytest.fail(f"timed out waiting for {condition}: {counts}")


def _freeze_mid_run(victim: subprocess.Popen[str], url: str) -> set[str]:
    """Stop ``victim`` (SIGSTOP) at a moment it holds running runs and has delivered to the
    sink, and return those runs. Stopped, it cannot finish them between the look and the
    kill, as it could between a look and a SIGKILL on a loaded machine."""
    held = (f"SELECT run_id FROM runs WHERE status = 'running' AND "
            f"lease_owner LIKE '%:{victim.pid}:%'")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _wait_until("the victim to be mid-run", url,
                    f"SELECT count(*) > 0 FROM ({held}) AS h WHERE EXISTS (SELECT 1 FROM "
                    f"sink_deliveries WHERE pid = {victim.pid})", 60)
        victim.send_signal(signal.SIGSTOP)
        orphans = {str(r[0]) for r in _query(url, held)}
        if orphans:
            return orphans
        victim.send_signal(signal.SIGCONT)  # it finished them in between: look again
    pytest.fail("the victim never held a run long enough to be stopped mid-run")


@pytest.mark.postgres
@pytest.mark.slow
def test_three_workers_survive_a_sigkill_without_duplicate_effects() -> None:
    """Three worker processes finish 100 runs although one is SIGKILLed mid-run: its runs
    are taken over once its lease lapses, every run completes, the sink applied each
    effect key once (only the dead worker's crash window may deliver a key twice), and the
    audit holds."""
    with fresh_schema() as url:
        create_sink(url)
        open_store(url)  # create the schema before the workers start
        args = ("--concurrency", "4", "--lease-seconds", str(LEASE_SECONDS),
                "--poll-seconds", "0.5")
        with _workers(url, 3, *args) as procs:
            for proc in procs:
                _wait_ready(proc)  # all three are serving before there is work to share
            asyncio.run(_start_runs(url, 100, pause_s=0.1))
            victim = procs[0]
            orphans = _freeze_mid_run(victim, url)
            victim.send_signal(signal.SIGKILL)
            # Not reaped until the end: a zombie's pid still looks alive to the survivors'
            # same-host check, so only the lease expiry can free the victim's runs.
            _wait_until("every run to finish", url,
                        "SELECT count(*) = 100 FROM runs WHERE status IN "
                        "('completed', 'failed', 'killed', 'stranded')", 120)
            for proc in procs[1:]:
                proc.send_signal(signal.SIGTERM)
                _, err = proc.communicate(timeout=30)
                assert proc.returncode == 0, err
        assert victim.returncode == -signal.SIGKILL

        async def inspect() -> None:
            store = open_store(url)
            try:
                assert await store.count_runs() == {"completed": 100}
                report = await audit(store)
                assert report.ok, report.violations
                assert report.effects_pending == 0
                done = {e.key for e in await store.list_effects() if e.status == "done"}
                for run_id in orphans:
                    run = await store.get_run(run_id)
                    assert run is not None and run.result["worker"] != victim.pid
            finally:
                await store.close()
            applied = _query(url, "SELECT key FROM sink")
            assert sorted(str(r[0]) for r in applied) == sorted(done)
            per_key = _query(url, "SELECT key, count(*), bool_or(pid = "
                                  f"{victim.pid}) FROM sink_deliveries GROUP BY key")
            assert {str(k) for k, _, _ in per_key} == done
            assert all(n == 1 or (n == 2 and by_victim) for _, n, by_victim in per_key), [
                row for row in per_key if row[1] != 1]

        assert orphans, "the victim held no run when it was killed"
        asyncio.run(inspect())


@pytest.mark.postgres
def test_an_idle_worker_wakes_on_notify_not_on_its_poll() -> None:
    """A worker polling only every 60 s still starts a new run at once: the NOTIFY sent
    when the run is created wakes it."""
    with fresh_schema() as url:
        create_sink(url)
        open_store(url)  # create the schema before the worker starts
        with _workers(url, 1, "--poll-seconds", "60", "--grace-seconds", "1") as (proc,):
            _wait_ready(proc)
            time.sleep(0.5)  # the worker is idle, waiting on its notification channel
            started = time.monotonic()
            asyncio.run(_start_runs(url, 1, pause_s=0))
            _wait_until("the run to complete", url,
                        "SELECT count(*) = 1 FROM runs WHERE status = 'completed'", 20)
            assert time.monotonic() - started < 10
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
