"""The renewal portfolio on PostgreSQL under chaos: worker processes that are SIGKILLed and
replaced, and a database restart, for tests/test_postgres_chaos.py.

Workers are plain ``threshold worker --clock virtual --agents
threshold.apps.renewal.run:agents`` processes; the portfolio is named by the environment
(``THRESHOLD_RENEWAL_CUSTOMERS``, ``THRESHOLD_RENEWAL_SEED``), the same for every worker,
for the starter and for the undisturbed reference run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from threshold import Runtime, open_store
from threshold.apps.renewal.agent import AGENT
from threshold.apps.renewal.run import (
    WINDOW_START,
    PortfolioOptions,
    renewal_input,
    serve_portfolio,
)
from threshold.clock import VirtualClock, to_iso
from threshold.ids import derive_seed
from threshold.store import Store

CLOCK_META = "clock.virtual_now"
TERMINAL = ("completed", "failed", "killed", "stranded")


def options(url: str, customers: int, seed: int) -> PortfolioOptions:
    return PortfolioOptions(db=url, customers=customers, seed=seed, mail=False)


async def start_portfolio(url: str, customers: int, seed: int) -> int:
    """Create one renewal run per customer at the portfolio's first virtual day."""
    store = open_store(url)
    runtime = Runtime(store, clock=VirtualClock(WINDOW_START))
    world = serve_portfolio(runtime, options(url, customers, seed))
    try:
        await store.set_meta(CLOCK_META, to_iso(WINDOW_START))
        for c in world.customers.values():
            await runtime.start(AGENT, renewal_input(c, seed), run_id=f"renewal-{c.customer_id}",
                                seed=derive_seed(seed, c.customer_id))
        return len(world.customers)
    finally:
        world.crm.close()
        await store.close()


async def reference_run(url: str, customers: int, seed: int) -> None:
    """The undisturbed run: one runtime in this process works the portfolio to the end."""
    await start_portfolio(url, customers, seed)
    store = open_store(url)
    runtime = Runtime(store, clock=VirtualClock(WINDOW_START))
    world = serve_portfolio(runtime, options(url, customers, seed))
    try:
        await runtime.run_until_idle()
    finally:
        world.crm.close()
        await store.close()


async def outcomes(store: Store) -> dict[str, tuple[str, int, int]]:
    """Per renewal run: its outcome, discount and term."""
    found = {}
    for run in await store.list_runs():
        if run.agent == AGENT and run.result is not None:
            found[run.run_id] = (str(run.result["outcome"]), int(run.result["discount_pct"]),
                                 int(run.result["term_months"]))
    return found


def query(url: str, sql: str, retry_seconds: float = 60.0) -> list[tuple[Any, ...]]:
    """A read that outlasts a database restart."""
    deadline = time.monotonic() + retry_seconds
    while True:
        try:
            with psycopg.connect(url, connect_timeout=5) as conn:
                return conn.execute(sql).fetchall()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                   check=True, capture_output=True, timeout=120)


class WorkerPool:
    """``n`` worker processes; ``kill_one`` SIGKILLs a random one and starts its successor.
    Output goes to files (a full pipe would stall a worker)."""

    def __init__(self, url: str, n: int, logs: Path, customers: int, seed: int,
                 *extra: str) -> None:
        self.url, self.logs, self.extra = url, logs, extra
        self.env = {**os.environ, "THRESHOLD_RENEWAL_CUSTOMERS": str(customers),
                    "THRESHOLD_RENEWAL_SEED": str(seed)}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed: list[int] = []
        self._spawned = 0
        self.startup_failures = 0
        self._logs_by_pid: dict[int, Path] = {}
        for _ in range(n):
            self.procs.append(self._spawn())

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._spawned += 1
        path = self.logs / f"worker-{self._spawned}.log"
        log = open(path, "wb")  # noqa: SIM115
        cmd = [sys.executable, "-m", "threshold.cli._main", "worker", "--db", self.url,
               "--clock", "virtual", "--agents", "threshold.apps.renewal.run:agents",
               *self.extra]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        self._logs_by_pid[proc.pid] = path
        return proc

    def kill_one(self, rng: random.Random) -> int:
        index = rng.randrange(len(self.procs))
        victim = self.procs[index]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)  # reaped: its pid is gone, so survivors see it dead
        self.killed.append(victim.pid)
        self.procs[index] = self._spawn()
        return victim.pid

    def supervise(self) -> list[str]:
        """Act as a supervisor would: replace a worker that could not reach the database
        at start-up (opening the store does not wait for it, unlike running operations).
        Returns the logs of workers that exited for any other reason."""
        other = []
        for index, proc in enumerate(self.procs):
            if proc.poll() is None:
                continue
            log = self._log_of(proc).read_text(errors="replace")
            if "StoreError: cannot connect" in log:
                self.startup_failures += 1
                self.procs[index] = self._spawn()
            else:
                other.append(log)
        return other

    def _log_of(self, proc: subprocess.Popen[bytes]) -> Path:
        return self._logs_by_pid[proc.pid]

    def _wait_serving(self, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
        """A worker installs its SIGTERM handler before it says it is serving."""
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if b" serving " in self._log_of(proc).read_bytes():
                return
            time.sleep(0.1)

    def stop(self) -> list[int | None]:
        """SIGTERM every worker (once it is serving); their exit codes."""
        for proc in self.procs:
            self._wait_serving(proc)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=30))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait(timeout=30))
        return codes

    def log_tail(self, chars: int = 3000) -> str:
        text = ""
        for path in sorted(self.logs.glob("worker-*.log")):
            text += f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}\n"
        return text
