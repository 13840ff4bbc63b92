"""``threshold approvals``: the inbox from a shell, deciding through the runtime."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from helpers import Ledger, Offer, offer_json
from threshold import (
    Boundary,
    Prompt,
    RejectPolicy,
    RunContext,
    Runtime,
    SystemClock,
    open_store,
)
from threshold.apps.renewal.customers import data_file
from threshold.cli import main
from threshold.models import ModelRegistry, ScriptedModel
from threshold.patterns.gate import discount_gate
from threshold.patterns.hitl import breach_routes
from threshold.patterns.policy import load_policy

POLICY = load_policy(data_file("policy.yaml"))
CAROL = "carol@counsel+human_specialist"


def deployed(url: str, ledger: Ledger) -> Runtime:
    """The renewal agent as a worker process would deploy it on ``url``."""
    models = ModelRegistry()
    models.add("scripted", ScriptedModel([offer_json(pct=90)]))
    runtime = Runtime(open_store(url), clock=SystemClock(), models=models,
                      default_model="scripted")
    boundary = Boundary("offer", output=Offer, prompt=Prompt("offer", "1", "Customer {c}."),
                        verifiers=[discount_gate(POLICY)], commit=ledger.commit,
                        on_reject=RejectPolicy(routes=breach_routes(POLICY)))

    @runtime.agent("renew")
    async def renew(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        return (await ctx.cross(boundary, {"c": inp["c"]}, facts={"tenant": "C-9"})).to_json()

    return runtime


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_approve_and_deny_from_the_cli_resume_the_runs(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    """Two gated 90 % discounts wait in the inbox; the CLI lists and shows them, refuses a
    principal without the role (exit 2, journaled), approves one and denies the other, and
    the runs resume accordingly on the worker's next pass; stats count the decisions."""
    url = f"sqlite:///{tmp_path / 'inbox.db'}"
    ledger = Ledger()

    async def escalate() -> None:
        runtime = deployed(url, ledger)
        for run_id in ("r1", "r2"):
            await runtime.start("renew", {"c": run_id}, run_id=run_id)
        await runtime.run_until_idle()
        await runtime.store.close()

    asyncio.run(escalate())

    code, out, _ = cli(capsys, "approvals", "list", "--status", "pending", "--db", url,
                       "--json")
    assert code == 0
    pending = json.loads(out)
    assert [(a["approval_id"], a["role"]) for a in pending] == [
        ("apr-r1/1", "counsel+human_specialist"), ("apr-r2/1", "counsel+human_specialist")]

    code, out, _ = cli(capsys, "approvals", "show", "apr-r1/1", "--db", url)
    assert code == 0
    assert "90 % is above the policy cap of 30 %" in out and "escalated" in out

    code, _, err = cli(capsys, "approvals", "approve", "apr-r1/1", "--as", "eve@intern",
                       "--db", url)
    assert code == 2 and "UnauthorizedError" in err

    code, out, _ = cli(capsys, "approvals", "approve", "apr-r1/1", "--as", CAROL,
                       "--comment", "strategic account", "--db", url, "--json")
    assert code == 0
    decided = json.loads(out)
    assert (decided["status"], decided["decided_by"], decided["comment"]) == (
        "approved", CAROL, "strategic account")

    code, out, _ = cli(capsys, "approvals", "deny", "apr-r2/1", "--as", CAROL, "--db", url)
    assert code == 0 and "denied by" in out

    code, _, err = cli(capsys, "approvals", "deny", "apr-r1/1", "--as", CAROL, "--db", url)
    assert code == 2 and "already approved" in err
    code, _, err = cli(capsys, "approvals", "show", "apr-nope", "--db", url)
    assert code == 2 and "NotFoundError" in err

    async def resume() -> None:
        runtime = deployed(url, ledger)
        await runtime.run_until_idle()
        runs = {r.run_id: r for r in await runtime.store.list_runs()}
        assert runs["r1"].status == runs["r2"].status == "completed"
        assert runs["r1"].result["outcome"] == "committed"
        assert runs["r1"].result["decided_by"] == CAROL
        assert runs["r2"].result["outcome"] == "denied"
        refused = await runtime.store.list_events("r1", kind="approval.refused")
        assert [e.data["principal"] for e in refused] == ["eve@intern"]
        await runtime.store.close()

    asyncio.run(resume())
    assert ledger.calls == ["r1/1/offer"]

    code, out, _ = cli(capsys, "approvals", "stats", "--db", url, "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats[CAROL]["decisions"] == 2 and stats[CAROL]["approve_rate"] == 0.5
    assert stats[CAROL]["median_latency_s"] >= 0

    code, out, _ = cli(capsys, "approvals", "list", "--db", url)
    assert code == 0 and "2 approval(s)" in out and f"by {CAROL}" in out
    code, out, _ = cli(capsys, "approvals", "stats", "--db", url)
    assert code == 0 and CAROL in out and "50%" in out
