"""Builders for the web console tests: real runs on a real SQLite file, escalated by a
scripted model, plus tokens for principals with and without the roles."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from threshold.apps.demo import Customer
from threshold.apps.demo import register as register_demo
from threshold.boundary import (
    Accept,
    Boundary,
    Escalate,
    Prompt,
    Reject,
    RejectPolicy,
    VerifyContext,
    verifier,
)
from threshold.clock import VirtualClock
from threshold.models import ModelRegistry, ScriptedModel
from threshold.runtime import RunContext, Runtime
from threshold.store import Store, open_store

ANN = "tok-ann-pricing-lead"  # ann@pricing_lead: may decide the demo's approvals
BOB = "tok-bob-support-only"  # bob@support: authenticated, lacks every needed role
VIC = "tok-vic-vp-engineering"  # vic@vp_engineering: on the policy's kill-switch list
ADA = "tok-ada-admin-000000"  # ada@admin: admin role
TOKENS = {ANN: "ann@pricing_lead", BOB: "bob@support", VIC: "vic@vp_engineering",
          ADA: "ada@admin"}
POLICY = Path(__file__).parents[1] / "src/threshold/apps/renewal/data/policy.yaml"
XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Pitch(BaseModel):
    """An offer with free text: the proposal an attacker would fill with markup."""

    headline: str = Field(max_length=500)
    discount_pct: int = Field(ge=0, le=100)


@verifier("pitch_cap", version="1")
def pitch_cap(pitch: Pitch, ctx: VerifyContext) -> Accept | Reject:
    if pitch.discount_pct > 30:
        return Reject("policy.pitch_cap", f"{pitch.discount_pct}% exceeds 30%", retryable=False)
    return Accept()


PITCH = Boundary("pitch", output=Pitch, prompt=Prompt("pitch", "1", "Pitch to {name}."),
                 verifiers=[pitch_cap], on_reject=RejectPolicy(max_attempts=1, routes={
                     "policy.": Escalate(role="pricing_lead")}))


def runtime(store: Store) -> Runtime:
    """A runtime serving the demo agent (scripted to propose 45 %), the pitch agent (whose
    headline is markup) and a journal-only agent whose events tag patterns."""
    models = ModelRegistry()
    models.add("scripted:d45", ScriptedModel([json.dumps(
        {"action": "renew", "discount_pct": 45, "term_months": 12})]))
    models.add("scripted:d10", ScriptedModel([json.dumps(
        {"action": "renew", "discount_pct": 10, "term_months": 12})]))
    models.add("scripted:xss", ScriptedModel([json.dumps({"headline": XSS,
                                                          "discount_pct": 45})]))
    rt = Runtime(store, clock=VirtualClock(), models=models, default_model="scripted:d45")
    register_demo(rt)

    @rt.agent("pitch", version="1")
    async def pitch(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        crossing = await ctx.cross(PITCH, {"name": inp["name"]})
        return {"outcome": crossing.outcome}

    @rt.agent("journal", version="1")
    async def journal(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        for kind in inp["events"]:
            await ctx.event(kind, note="tag", **({"topic": "product.eol"}
                                                 if kind == "consumed" else {}))
        return {"outcome": "noted"}

    return rt


def customer(name: str, tenure: int = 30) -> Customer:
    return Customer(customer_id=name, monthly_charges=50.0, tenure_months=tenure)


async def _one_round(rt: Runtime) -> None:
    """Execute every ready run once, without jumping the virtual clock to the SLA timers
    (``run_until_idle`` would let each approval lapse to its fallback)."""
    calls: list[int] = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 1

    await rt.serve(poll_seconds=0.01, stop=stop)


async def seed(url: str, *, escalated: str = "demo-45", committed: str | None = None,
               xss: str | None = None, journal: dict[str, list[str]] | None = None) -> None:
    """Runs for the console: ``escalated`` waits on a pricing_lead approval; ``committed``
    finished without a human; ``xss`` waits with a markup proposal; ``journal`` runs emit
    the given event kinds."""
    store = open_store(url)
    try:
        rt = runtime(store)
        await rt.start("demo.quote", customer("C-45"), run_id=escalated, seed=1)
        if committed:
            await rt.start("demo.quote", customer("C-10"), run_id=committed, seed=2,
                           model="scripted:d10")
        if xss:
            await rt.start("pitch", {"name": "Mallory"}, run_id=xss, seed=3,
                           model="scripted:xss")
        for run_id, kinds in (journal or {}).items():
            await rt.start("journal", {"events": kinds}, run_id=run_id, seed=4)
        await _one_round(rt)
    finally:
        await store.close()


async def resume(url: str) -> None:
    """The worker, as an operator would run it after a decision."""
    store = open_store(url)
    try:
        await runtime(store).run_until_idle()
    finally:
        await store.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def snapshot(url: str) -> dict[str, Any]:
    """Everything a request could change, to prove a GET changed nothing."""
    store = open_store(url)
    try:
        return {
            "runs": [(r.run_id, r.status, r.updated_at, r.result) for r in
                     await store.list_runs()],
            "approvals": [(a.approval_id, a.status, a.decided_by, a.comment) for a in
                          await store.list_approvals()],
            "events": len(await store.list_events()),
            "timers": [(t.timer_id, t.status) for t in await store.list_timers()],
            "effects": [(e.key, e.status, e.performed) for e in await store.list_effects()],
            "kill": await store.get_meta("kill:*"),
        }
    finally:
        await store.close()
