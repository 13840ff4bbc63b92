"""The renewal agent end to end against a real llama.cpp server serving the tiny model.

The model knows nothing, so its proposals are random and the outcomes are too; what must
hold regardless is the runtime's promise: every run ends, every commit has its accepts, no
committed discount exceeds the policy cap (in the journal *and* in the CRM tables), and each
proposal's provenance names the model that served it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from threshold.apps.renewal.report import OUTCOMES
from threshold.apps.renewal.run import PortfolioOptions, run_portfolio
from threshold.audit import audit
from threshold.models import allow_model_requests
from threshold.store import open_store

ALIAS = "model-v1"
POLICY_CAP_PCT = 30  # the packaged policy v7: discount.max_pct
CUSTOMERS = 10


def crm_max_discounts(db_file: Path) -> tuple[int, int, int]:
    """(largest offered discount, largest contracted discount, contracts) read straight
    from the CRM tables the agent's effects write, not from the runtime's journal."""
    db = sqlite3.connect(db_file)
    try:
        offered = db.execute("SELECT COALESCE(MAX(discount_pct), 0) FROM crm_offers").fetchone()
        signed, contracts = db.execute(
            "SELECT COALESCE(MAX(discount_pct), 0), COUNT(*) FROM crm_contracts").fetchone()
    finally:
        db.close()
    return int(offered[0]), int(signed), int(contracts)


async def journal_view(url: str) -> dict[str, Any]:
    """What the journal says about the finished portfolio, read back after the run."""
    store = open_store(url)
    try:
        runs = await store.list_runs(agent="renewal")
        report = await audit(store)
        crossings = await store.list_crossings()
        proposals = [a for a in await store.list_attempts() if a.kind == "proposal"]
    finally:
        await store.close()
    over_cap = [a for a in proposals if isinstance(a.value, dict)
                and int(a.value.get("discount_pct", 0)) > POLICY_CAP_PCT]
    return {"runs": runs, "report": report, "crossings": crossings,
            "proposals": proposals, "over_cap_proposals": len(over_cap)}


@pytest.mark.realmodel
def test_renewal_portfolio_on_the_real_model_keeps_every_promise(realmodels, tmp_path):
    """Ten renewals proposed by the real (random) model all end in a terminal outcome,
    the audit holds, no committed discount exceeds the 30 % cap in the journal or in the
    CRM tables, and every proposal's provenance names the served model."""
    db_file = tmp_path / "renewal.db"
    url = f"sqlite:///{db_file}"
    options = PortfolioOptions(db=url, customers=CUSTOMERS, model=f"openai:{ALIAS}",
                               base_url=realmodels.urls[ALIAS], mail=False)
    with allow_model_requests():
        summary = asyncio.run(run_portfolio(options))
    view = asyncio.run(journal_view(url))
    print(f"\n[realmodel renewal] {summary['wall_s']} s, outcomes {summary['outcomes']}, "
          f"rejects {summary['sdb']['rejects_by_code']}, "
          f"over-cap proposals {view['over_cap_proposals']}")

    # Every run ended, and in one of the agent's terminal outcomes.
    runs = view["runs"]
    assert len(runs) == CUSTOMERS
    assert {r.status for r in runs} == {"completed"}
    assert all((r.result or {}).get("outcome") in OUTCOMES for r in runs)
    assert summary["unfinished"] == 0 and summary["failed"] == 0

    # The audit: every commit has its accepts (all verifiers, or the human plane).
    report = view["report"]
    assert report.ok, report.violations
    assert report.commits == report.commits_with_accept > 0
    assert summary["sdb"]["audit_ok"]

    # Zero out-of-policy commits: the journal's committed outcomes and the CRM agree.
    assert summary["policy_cap_pct"] == POLICY_CAP_PCT
    assert summary["max_committed_discount_pct"] <= POLICY_CAP_PCT
    offered, signed, contracts = crm_max_discounts(db_file)
    assert offered <= POLICY_CAP_PCT and signed <= POLICY_CAP_PCT
    assert contracts == CUSTOMERS  # one contract row per customer, whatever its outcome

    # Provenance: every crossing and every proposal names the model that served it.
    assert {c.model_id for c in view["crossings"]} == {f"openai:{ALIAS}"}
    proposals = view["proposals"]
    assert proposals
    for attempt in proposals:
        provenance = attempt.provenance or {}
        assert provenance.get("model_id") == f"openai:{ALIAS}"
        assert provenance.get("served_model") == ALIAS
        assert (provenance.get("tokens_out") or 0) > 0


def threshold_command() -> list[str]:
    """The installed ``threshold`` console script of this interpreter, else the module."""
    script = Path(sys.executable).parent / "threshold"
    if script.exists():
        return [str(script)]
    found = shutil.which("threshold")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from threshold.cli import main; "
            "sys.exit(main())"]


@pytest.mark.realmodel
def test_renewal_cli_runs_against_the_local_server_in_a_fresh_process(realmodels, tmp_path):
    """``threshold renewal run --model openai:NAME --base-url URL`` works as a command: a
    fresh process (real calls allowed by default, no OPENAI_API_KEY) finishes three runs
    with the audit holding and the policy cap respected."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    db_file = tmp_path / "cli.db"
    completed = subprocess.run(
        [*threshold_command(), "renewal", "run", "--customers", "3",
         "--model", f"openai:{ALIAS}", "--base-url", realmodels.urls[ALIAS],
         "--no-mail", "--json", "--db", f"sqlite:///{db_file}"],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["runs"] == 3 and summary["unfinished"] == 0 and summary["failed"] == 0
    assert sum(summary["outcomes"].values()) == 3
    assert summary["sdb"]["audit_ok"] and summary["sdb"]["proposals"] > 0
    assert summary["max_committed_discount_pct"] <= POLICY_CAP_PCT
    offered, signed, contracts = crm_max_discounts(db_file)
    assert offered <= POLICY_CAP_PCT and signed <= POLICY_CAP_PCT and contracts == 3
