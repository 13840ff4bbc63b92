"""The store contract (threshold.testing.store_contract) on every backend: memory://, a
SQLite file and PostgreSQL (a fresh schema per check)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from pgschema import fresh_schema
from threshold.store import SQLiteStore, Store, open_store
from threshold.testing.store_contract import CHECKS, ContractTarget, run_contract

BACKENDS = ("memory", "sqlite", "postgres")


def _check(name: str, open_: Callable[[], Store], reopen: Callable[[], Store] | None) -> None:
    async def go() -> None:
        store = open_()
        try:
            await CHECKS[name](ContractTarget(store, reopen))
        finally:
            await store.close()

    asyncio.run(go())


@pytest.mark.parametrize("name", sorted(CHECKS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_store_contract(backend: str, name: str, tmp_path: Path) -> None:
    """The backend keeps the promise of the named contract check (see its docstring)."""
    if backend == "memory":
        _check(name, lambda: open_store("memory://"), None)
    elif backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'contract.db'}"
        _check(name, lambda: open_store(url), lambda: open_store(url))
    else:
        with fresh_schema() as url:
            _check(name, lambda: open_store(url), lambda: open_store(url))


def test_contract_covers_every_store_method() -> None:
    """Every method of the Store protocol is exercised by some contract check."""
    import inspect

    from threshold.testing import _contract_journal, _contract_runs

    source = inspect.getsource(_contract_runs) + inspect.getsource(_contract_journal)
    methods = [m for m in dir(Store) if not m.startswith("_") and m not in ("url", "close")]
    missing = [m for m in methods if f".{m}(" not in source]
    assert missing == []


def test_run_contract_reports_a_broken_backend() -> None:
    """run_contract names the checks a backend fails (here: one that forgets wake marks)."""

    class ForgetfulStore(SQLiteStore):
        async def wake_run(self, run_id: str, *, now: str) -> bool:
            run = await self.get_run(run_id)
            if run is None or run.status != "waiting":
                return False  # drops the wake of a running run
            return await super().wake_run(run_id, now=now)

    async def make() -> ContractTarget:
        return ContractTarget(ForgetfulStore(":memory:", url="memory://"))

    with pytest.raises(AssertionError, match="wake_while_running_makes_suspension_ready"):
        asyncio.run(run_contract(make, only=["wake_while_running_makes_suspension_ready",
                                             "meta_round_trip"]))
