"""The agent behind the golden journals, and deliberately altered versions of it.

``golden.renewal`` makes a small renewal: an offer crosses a boundary whose policy breach
escalates to a pricing lead (SLA two days, fallback deny), the customer's reply arrives in
the inbox (or a reminder goes out), and the close crosses a second boundary. The journal
positions are fixed, so the tests can name the step where an altered agent diverges:

    1 event window.open   2 step crm.read   3 cross offer   4 event transition
    5 receive customer.reply   6 (effect mail.reminder)   then cross close, effect
    crm.contract, event transition

``make_golden.py`` records the journals in ``deterministic.json`` with this code.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from threshold import (
    Accept,
    Boundary,
    EffectContext,
    Escalate,
    ModelRequest,
    Prompt,
    Reject,
    RejectPolicy,
    RunContext,
    Runtime,
    VerifyContext,
    verifier,
)
from threshold.clock import to_iso

AGENT = "golden.renewal"


class Customer(BaseModel):
    customer_id: str
    tenure_months: int
    monthly_charges: float


class Offer(BaseModel):
    discount_pct: int = Field(ge=0, le=100)
    term_months: int = Field(ge=1, le=36)


class Close(BaseModel):
    decision: Literal["renew", "release"]


@verifier("discount_cap", version="1")
def discount_cap(offer: Offer, ctx: VerifyContext) -> Accept | Reject:
    if offer.discount_pct > 30:
        return Reject("policy.discount_cap", f"{offer.discount_pct}% is over the 30% cap",
                      retryable=False, field="discount_pct")
    return Accept()


@verifier("term_known", version="1")
def term_known(offer: Offer, ctx: VerifyContext) -> Accept | Reject:
    if offer.term_months not in (12, 24, 36):
        return Reject("rule.term", f"{offer.term_months} months is not a product term",
                      field="term_months", hint="use 12, 24 or 36")
    return Accept()


@verifier("close_matches_reply", version="1")
def close_matches_reply(close: Close, ctx: VerifyContext) -> Accept | Reject:
    wanted = "renew" if ctx.inputs["reply"] == "accept" else "release"
    if close.decision != wanted:
        return Reject("rule.close", f"the customer said {ctx.inputs['reply']}",
                      hint=f"decide {wanted}")
    return Accept()


async def send_offer(offer: Offer, effect: EffectContext) -> dict[str, Any]:
    return {"message_id": effect.key, "discount_pct": offer.discount_pct}


async def record_close(close: Close, effect: EffectContext) -> dict[str, Any]:
    return {"crm_row": effect.key, "decision": close.decision}


OFFER = Boundary(
    "offer", output=Offer,
    prompt=Prompt("offer", "1", "Customer {customer_id}, {tenure_months} months at "
                  "${monthly_charges}: propose a renewal offer."),
    verifiers=[discount_cap, term_known], commit=send_offer,
    on_reject=RejectPolicy(max_attempts=3, routes={
        "policy.": Escalate(role="pricing_lead", sla=timedelta(days=2), fallback="deny")}))

CLOSE = Boundary(
    "close", output=Close,
    prompt=Prompt("close", "1", "The customer replied {reply}. Close the renewal."),
    verifiers=[close_matches_reply], commit=record_close)


def offer_generator(rng: random.Random, request: ModelRequest) -> dict[str, Any]:
    return {"discount_pct": rng.choice([0, 5, 10, 15, 20, 25, 35, 45]),
            "term_months": rng.choice([12, 24, 36, 18])}


def close_generator(rng: random.Random, request: ModelRequest) -> dict[str, Any]:
    return {"decision": rng.choice(["renew", "release"])}


def read_profile(customer_id: str, tenure: int) -> dict[str, Any]:
    return {"segment": "loyal" if tenure >= 24 else "new", "id": customer_id}


async def _renewal(ctx: RunContext, c: Customer, *, altered: bool = False) -> dict[str, Any]:
    await ctx.event("window.open", customer=c.customer_id)
    profile = await ctx.step("crm.read", read_profile, c.customer_id, c.tenure_months)
    offer = await ctx.cross(OFFER, c.model_dump())
    if altered:
        await ctx.event("audit.note", customer=c.customer_id)
    if not offer.committed or offer.value is None:
        await ctx.event("transition", to="human_required", why=offer.outcome)
        return {"outcome": "escalated", "segment": profile["segment"], "why": offer.reason}
    await ctx.event("transition", to="offer_sent", pct=offer.value.discount_pct)
    reply = await ctx.receive("customer.reply", timeout=timedelta(days=7))
    if reply is None:
        async def remind(effect: EffectContext) -> str:
            return f"reminder {effect.key} at {to_iso(effect.now)}"

        await ctx.effect("mail.reminder", remind)
        reply = {"kind": "no_reply"}
    close = await ctx.cross(CLOSE, {"reply": reply["kind"]})
    decision = close.value.decision if close.value is not None else "release"

    async def record(effect: EffectContext) -> str:
        return f"contract {c.customer_id} {decision}"

    await ctx.effect("crm.contract", record)
    await ctx.event("transition", to="closed", decision=decision)
    return {"outcome": decision, "discount_pct": offer.value.discount_pct,
            "segment": profile["segment"], "closed_by": close.decided_by or "agent"}


def _generators(runtime: Runtime) -> None:
    runtime.models.register_sim_generator(Offer, offer_generator)
    runtime.models.register_sim_generator(Close, close_generator)


def register(runtime: Runtime) -> None:
    """The code the golden journals were recorded with."""
    _generators(runtime)

    @runtime.agent(AGENT, version="1", input=Customer)
    async def renewal(ctx: RunContext, c: Customer) -> dict[str, Any]:
        return await _renewal(ctx, c)


def register_altered(runtime: Runtime) -> None:
    """Version 1, edited in place: a journal note after the offer (step 4) that the recorded
    journals do not have. Replaying them must fail at step 4."""
    _generators(runtime)

    @runtime.agent(AGENT, version="1", input=Customer)
    async def renewal(ctx: RunContext, c: Customer) -> dict[str, Any]:
        return await _renewal(ctx, c, altered=True)


def register_versions(runtime: Runtime) -> None:
    """Version 2 (compatible: same journal, other result) and 3 (the altered code), for
    migration; version 1 is not deployed any more."""
    _generators(runtime)

    @runtime.agent(AGENT, version="2", input=Customer)
    async def renewal_v2(ctx: RunContext, c: Customer) -> dict[str, Any]:
        return {**await _renewal(ctx, c), "definition": "2"}

    @runtime.agent(AGENT, version="3", input=Customer)
    async def renewal_v3(ctx: RunContext, c: Customer) -> dict[str, Any]:
        return await _renewal(ctx, c, altered=True)


class World:
    """The outside world of a recording: a pricing lead who decides some escalations an hour
    after they open (and lets others lapse to the SLA fallback), and customers who reply a
    day after their offer (or never)."""

    def __init__(self, runtime: Runtime, replies: dict[str, str | None]) -> None:
        self.runtime, self.replies = runtime, replies
        self._replied: set[str] = set()
        self._decided: set[str] = set()

    async def _pending(self) -> list[tuple[datetime, str, Any]]:
        store = self.runtime.store
        due: list[tuple[datetime, str, Any]] = []
        for a in await store.list_approvals(status="pending"):
            number = int(a.run_id.rsplit("-", 1)[1])
            if a.approval_id not in self._decided and number % 3 != 2:
                due.append((datetime.fromisoformat(a.created_at) + timedelta(hours=1),
                            "decide", a))
        for event in await store.list_events(kind="transition"):
            run_id = event.run_id or ""
            if event.data.get("to") == "offer_sent" and run_id not in self._replied and \
                    self.replies.get(run_id) is not None:
                due.append((datetime.fromisoformat(event.at) + timedelta(days=1), "reply",
                            run_id))
        return sorted(due, key=lambda d: d[0])

    async def next_due(self) -> datetime | None:
        pending = await self._pending()
        return pending[0][0] if pending else None

    async def act(self, now: datetime) -> int:
        done = 0
        for at, kind, item in await self._pending():
            if at > now:
                break
            if kind == "decide":
                self._decided.add(item.approval_id)
                number = int(item.run_id.rsplit("-", 1)[1])
                await self.runtime.decide(item.approval_id, approve=number % 3 == 0,
                                          principal="lee@pricing_lead",
                                          comment="ok" if number % 3 == 0 else "too deep")
            else:
                self._replied.add(item)
                await self.runtime.deliver(item, "customer.reply", f"{item}/reply",
                                           {"kind": self.replies[item]})
            done += 1
        return done
