"""The store contract: what every ``Store`` backend must do, written once as async checks.

Run it against your own backend the way threshold runs it against memory, SQLite and
PostgreSQL::

    from threshold.testing.store_contract import CHECKS, ContractTarget, run_contract

    @pytest.mark.parametrize("name", sorted(CHECKS))
    def test_my_store(name):
        async def go():
            store = MyStore(fresh_database())
            try:
                await CHECKS[name](ContractTarget(store, reopen=lambda: MyStore(same_db)))
            finally:
                await store.close()
        asyncio.run(go())

Each check gets a store on a fresh, empty database. ``reopen``, when the backend has it,
opens another handle on the same database, so concurrency checks race real connections;
without it they race coroutines on the one handle. A broken promise raises
``ContractViolation`` (an ``AssertionError``) naming what was expected and what was found.
"""

from __future__ import annotations

from threshold.testing import _contract_journal, _contract_runs  # noqa: F401  (register checks)
from threshold.testing._contract_base import (
    CHECKS,
    Check,
    ContractTarget,
    ContractViolation,
    run_contract,
)

__all__ = ["CHECKS", "Check", "ContractTarget", "ContractViolation", "run_contract"]
