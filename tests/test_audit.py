"""The audit reads narrow columns where the store offers them (``audit_rows``) and whole
records through the protocol elsewhere; both must reach the same verdict on the same
journal, violations included."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from threshold.apps.renewal.run import PortfolioOptions, run_portfolio
from threshold.audit import AuditReport, audit
from threshold.store import SQLiteStore, Store


class ProtocolOnly:
    """A store seen through the protocol's ``list_*`` methods alone: the real store
    underneath, without its optional ``audit_rows``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name == "audit_rows":
            raise AttributeError(name)
        return getattr(self._store, name)


def _journal(tmp_path: Path) -> Path:
    """A chaos portfolio: rejects, transport errors, escalations to humans, then two forged
    rows: a commit of a hash nobody accepted, and an effect done for an aborted crossing."""
    path = tmp_path / "j.db"
    summary = asyncio.run(run_portfolio(PortfolioOptions(
        db=f"sqlite:///{path}", customers=30, model="sim:chaos", mail=False)))
    assert summary["sdb"]["audit_ok"]
    db = sqlite3.connect(path)
    db.execute("UPDATE crossings SET committed_hash = 'forged' WHERE crossing_id = "
               "(SELECT crossing_id FROM crossings WHERE status = 'committed' "
               "ORDER BY crossing_id LIMIT 1)")
    db.execute("UPDATE effects SET status = 'done', crossing_id = (SELECT crossing_id FROM "
               "crossings WHERE status != 'committed' ORDER BY crossing_id LIMIT 1) WHERE key = "
               "(SELECT key FROM effects WHERE crossing_id IS NULL ORDER BY key LIMIT 1)")
    db.commit()
    db.close()
    return path


async def _both(path: Path, run_id: str | None) -> tuple[AuditReport, AuditReport]:
    store = SQLiteStore(str(path))
    try:
        narrow = await audit(store, run_id=run_id)
        whole = await audit(ProtocolOnly(store), run_id=run_id)  # type: ignore[arg-type]
    finally:
        await store.close()
    return narrow, whole


def test_narrow_and_whole_record_audits_agree(tmp_path: Path) -> None:
    path = _journal(tmp_path)
    narrow, whole = asyncio.run(_both(path, None))
    assert narrow == whole
    assert not narrow.ok and len(narrow.violations) == 2
    assert "forged" in narrow.violations[0] and "not committed" in narrow.violations[1]
    assert narrow.commits_with_accept == narrow.commits - 1
    assert narrow.rejects_by_code and narrow.transport_errors_by_kind and narrow.escalations
    db = sqlite3.connect(path)
    escalated = db.execute("SELECT min(run_id) FROM approvals").fetchone()[0]
    forged = db.execute("SELECT run_id FROM crossings WHERE committed_hash = 'forged'"
                        ).fetchone()[0]
    db.close()
    for run_id in (escalated, forged):
        one, other = asyncio.run(_both(path, run_id))
        assert one == other and one.crossings > 0
    assert not asyncio.run(_both(path, forged))[0].ok
