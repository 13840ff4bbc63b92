"""The 90-day contract-renewal agent, one run per customer, all six patterns.

day -90  window opens: the state row (P5) moves init -> window_open by compare-and-swap;
         a second trigger finds the row moved and is refused (P4 gate on the transition)
         four signal sub-agents propose in parallel (P1), merged by a declared priority;
         their CRM writes run as a saga that compensates on failure (P2)
day -60  score and strategy cross the strategy boundary
day -47  a product end-of-life event on the `product.eol` topic (P3) is absorbed by the row
day -30  the offer crosses the pricing boundary under the policy's caps and overrides (P4);
         out-of-policy discounts escalate to a human with an SLA and a fallback (P6);
         the commit mails the customer over SMTP and writes the CRM
day -23.. reminder timers while the customer's reply (an inbox message) is awaited
day -7   close: mergers and discounts over 50 % suspend for a human (P6)
day 0    terminal state: renewed, renewed_with_offer, restructured, churned or escalated
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from threshold.apps.renewal.customers import Customer
from threshold.apps.renewal.proposals import CloseTerms, Offer, SignalReport, Strategy
from threshold.apps.renewal.world import World
from threshold.boundary import (
    ApproveWithCap,
    Boundary,
    Escalate,
    Prompt,
    RejectPolicy,
)
from threshold.clock import from_iso, to_iso
from threshold.effects import EffectContext
from threshold.runtime import RunContext

AGENT = "renewal"
AGENT_VERSION = "1"
SLA = timedelta(hours=48)


class RenewalInput(BaseModel):
    customer: Customer
    window_open_at: str
    merger: bool = False


def _human(role: str, fallback: Any = "deny") -> Escalate:
    return Escalate(role=role, sla=SLA, fallback=fallback, reroute_to=None)


def build_boundaries(world: World) -> dict[str, Boundary[Any]]:
    from threshold.apps.renewal.gates import close_gates, offer_gates

    policy = world.policy
    signal = Boundary("signal", output=SignalReport, prompt=Prompt(
        "signal", "1", "Assess {source} risk for customer {customer_id}: tenure "
        "{tenure_months} months, {internet_service} internet, pays by {payment_method}, "
        "tech support {tech_support}."), on_reject=RejectPolicy(max_attempts=2))
    strategy = Boundary("strategy", output=Strategy, prompt=Prompt(
        "strategy", "1", "Signals say risk {signal_risk}. Contract {contract}, "
        "${monthly_charges}/month, plan end-of-life: {plan_eol}. Choose a strategy."),
        on_reject=RejectPolicy(max_attempts=3))
    offer = Boundary(
        "offer", output=Offer, prompt=Prompt(
            "offer", "1", "Customer {customer_id} ({contract}, ${monthly_charges}/month). "
            "Strategy allows up to {max_discount_pct}% off. Plan end-of-life: {plan_eol}. "
            "Write the renewal offer."),
        verifiers=offer_gates(policy),
        commit=world.send_offer,
        on_reject=RejectPolicy(max_attempts=3, routes={
            "policy.": _human("human_specialist", ApproveWithCap("discount_pct", 20))}))
    close = Boundary(
        "close", output=CloseTerms, prompt=Prompt(
            "close", "1", "The customer replied {reply} to {offered_pct}% off for "
            "{term_months} months (counter {counter_pct}%). Merger: {merger}. Close it."),
        verifiers=close_gates(policy),
        commit=world.record_close,
        on_reject=RejectPolicy(max_attempts=3, routes={
            "policy.human_only_discount": _human("counsel"),
            "policy.auto_close.require_human_for_mergers": _human("human_specialist"),
            "policy.discount.": _human("human_specialist", ApproveWithCap("discount_pct", 30)),
        }))
    return {"signal": signal, "strategy": strategy, "offer": offer, "close": close}


async def renewal(world: World, ctx: RunContext, inp: RenewalInput) -> dict[str, Any]:
    """Each stage is journaled as a whole once done, so the many resumes of a 90-day run
    (every timer and message wakes it) replay a handful of steps, not the whole history."""
    b = world.boundaries
    c = inp.customer
    day0 = from_iso(inp.window_open_at) + timedelta(days=90)
    facts = {"tenant": c.customer_id}

    async def open_window() -> dict[str, Any]:
        # day -90: the row's compare-and-swap refuses a duplicate trigger (P5 + P4).
        row = await world.rows.transition(ctx, c.customer_id, "window_open",
                                          {"day0": to_iso(day0)})
        if "refused" in row:
            await ctx.event("gate.duplicate_trigger", row=c.customer_id, why=row["refused"])
            return {"refused": row["refused"]}
        return await world.gather_signals(ctx, c)

    signals = await ctx.stage("open", open_window)
    if "refused" in signals:
        return {"outcome": "refused_duplicate", "why": signals["refused"]}

    async def score() -> dict[str, Any]:
        # day -60: score and strategy.
        await ctx.sleep_until(day0 - timedelta(days=60), purpose="score")
        await world.rows.transition(ctx, c.customer_id, "scoring", {"signals": signals})
        eol = await ctx.step("eol.check", world.eol_notice, c.internet_service,
                             to_iso(ctx.now()))
        strategy = await ctx.cross(b["strategy"], {
            "signal_risk": signals["risk"], "contract": c.contract,
            "monthly_charges": c.monthly_charges, "plan_eol": bool(eol)}, facts=facts)
        approach = strategy.value.model_dump() if strategy.value else {
            "approach": "standard", "max_discount_pct": 0, "risk_score": signals["risk"]}
        return {**approach, "plan_eol": eol}

    approach = await ctx.stage("score", score)

    async def midflight() -> dict[str, Any]:
        # A product end-of-life event on the topic (P3) is absorbed by the row.
        await ctx.sleep_until(day0 - timedelta(days=46), purpose="eol.watch")
        if approach["plan_eol"]:
            return approach
        eol = await ctx.step("eol.check", world.eol_notice, c.internet_service,
                             to_iso(ctx.now()))
        if not eol:
            return approach
        await world.rows.absorb(ctx, c.customer_id, {"plan_eol": eol})
        return {**approach, "approach": "restructure", "plan_eol": eol,
                "max_discount_pct": max(approach["max_discount_pct"], 10)}

    approach = await ctx.stage("midflight", midflight)

    async def outreach() -> dict[str, Any]:
        # day -30: the offer crosses the pricing boundary (P4 gates, P6 on breach).
        await ctx.sleep_until(day0 - timedelta(days=30), purpose="outreach")
        if approach["approach"] == "let_go":
            return {"sent": None, "why": "strategy let the contract go"}
        offer = await ctx.cross(b["offer"], {
            "customer_id": c.customer_id, "contract": c.contract,
            "monthly_charges": c.monthly_charges,
            "max_discount_pct": approach["max_discount_pct"],
            "plan_eol": bool(approach["plan_eol"])}, facts=facts)
        if not offer.committed or offer.value is None:
            await world.rows.transition(ctx, c.customer_id, "human_required",
                                        {"reason": offer.reason})
            return {"sent": None, "escalated": True, "why": f"offer {offer.outcome}"}
        sent = offer.value.model_dump()
        await world.rows.transition(ctx, c.customer_id, "offer_sent", sent)
        return {"sent": sent, "reply": await _await_reply(world, ctx, c)}

    outreach_result = await ctx.stage("outreach", outreach)
    sent = outreach_result["sent"]
    if sent is None:
        outcome = "escalated" if outreach_result.get("escalated") else "churned"
        return await _finish(world, ctx, c, outcome, 0, 12, outreach_result["why"])
    offer = Offer.model_validate(sent)
    reply = outreach_result["reply"]
    # day -7: close or escalate (P6 for mergers and discounts over 50 %).
    await ctx.sleep_until(day0 - timedelta(days=7), purpose="close")
    if reply is None or reply["kind"] in ("decline", "no_reply"):
        await world.rows.transition(ctx, c.customer_id, "expired", {"reply": reply})
        return await _finish(world, ctx, c, "churned", 0, offer.term_months,
                             "no reply" if reply is None else reply["kind"])
    close = await ctx.cross(b["close"], {
        "reply": reply["kind"], "offered_pct": offer.discount_pct,
        "counter_pct": reply.get("counter_pct") or 0, "term_months": offer.term_months,
        "plan": offer.plan, "merger": inp.merger}, facts=facts)
    if not close.committed or close.value is None:
        return await _finish(world, ctx, c, "escalated", 0, offer.term_months,
                             f"close {close.outcome}: {close.reason}")
    terms = close.value
    if terms.decision == "release":
        outcome = "churned"
    elif terms.decision == "restructure":
        outcome = "restructured"
    else:
        outcome = "renewed_with_offer" if terms.discount_pct > 0 else "renewed"
    return await _finish(world, ctx, c, outcome, terms.discount_pct, terms.term_months,
                         f"closed by {close.decided_by or 'agent'}", day0=day0)


async def _await_reply(world: World, ctx: RunContext, c: Customer) -> dict[str, Any] | None:
    """The reply is an inbox message; reminders go out on timers while it is awaited."""
    for reminder in range(3):
        reply = await ctx.receive("customer.reply", timeout=timedelta(days=7))
        if reply is not None:
            return dict(reply)
        if reminder < 2:
            async def remind(effect: EffectContext, n: int = reminder) -> str:
                return await world.send_reminder(effect, c, n + 1)

            await ctx.effect("mail.reminder", remind)
    return None


async def _finish(world: World, ctx: RunContext, c: Customer, outcome: str, discount: int,
                  term: int, why: str, day0: Any = None) -> dict[str, Any]:
    if day0 is not None:
        await ctx.sleep_until(day0, purpose="day0")
    revenue = 0.0 if outcome in ("churned", "escalated") else round(
        c.monthly_charges * (1 - discount / 100), 2)

    async def record(effect: EffectContext) -> bool:
        return world.crm.record_contract(effect.key, c.customer_id, outcome, discount, term,
                                         revenue, to_iso(effect.now))

    await ctx.effect("crm.contract", record)
    await world.rows.transition(ctx, c.customer_id, "closed", {"outcome": outcome})
    return {"outcome": outcome, "discount_pct": discount, "term_months": term,
            "monthly_revenue": revenue, "why": why}
