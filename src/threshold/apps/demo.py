"""The one-boundary demo: a discount offer proposed by a model, checked, then sent.

Small enough to read in one sitting; ``threshold demo`` runs it on the embedded defaults.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from threshold.audit import audit
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
from threshold.effects import EffectContext
from threshold.runtime import RunContext, Runtime
from threshold.store import Store


class Quote(BaseModel):
    """What the model proposes for one customer."""

    action: Literal["renew", "escalate", "churn"]
    discount_pct: int = Field(ge=0, le=100)
    term_months: int = Field(ge=1, le=36)


class Customer(BaseModel):
    customer_id: str
    monthly_charges: float
    tenure_months: int


@verifier("discount_cap", version="1")
def discount_cap(quote: Quote, ctx: VerifyContext) -> Accept | Reject:
    """Discounts above 30 % are out of policy."""
    if quote.discount_pct > 30:
        return Reject("policy.discount_cap", f"{quote.discount_pct}% exceeds the 30% cap",
                      retryable=False, field="discount_pct", hint="offer at most 30%")
    return Accept()


@verifier("term_fits_tenure", version="1")
def term_fits_tenure(quote: Quote, ctx: VerifyContext) -> Accept | Reject:
    """New customers get at most a 12-month term."""
    if ctx.inputs["tenure_months"] < 6 and quote.term_months > 12:
        return Reject("rule.term_too_long", "customers under 6 months get at most 12 months",
                      field="term_months", hint="use 12 or fewer")
    return Accept()


async def send_quote(quote: Quote, effect: EffectContext) -> dict[str, Any]:
    # A real system would send mail with ``effect.key`` as its Message-ID, so a resend
    # after a crash is deduplicated downstream.
    return {"message_id": effect.key, "discount_pct": quote.discount_pct}


QUOTE = Boundary(
    "quote",
    output=Quote,
    prompt=Prompt("quote", "1", "Customer {customer_id}: {tenure_months} months, "
                  "${monthly_charges}/month. Propose a renewal quote."),
    verifiers=[discount_cap, term_fits_tenure],
    commit=send_quote,
    on_reject=RejectPolicy(max_attempts=3, routes={
        "policy.": Escalate(role="pricing_lead", sla=timedelta(days=2), fallback="deny")}),
)


def register(runtime: Runtime) -> None:
    @runtime.agent("demo.quote", version="1", input=Customer)
    async def quote_agent(ctx: RunContext, customer: Customer) -> dict[str, Any]:
        crossing = await ctx.cross(QUOTE, customer.model_dump())
        return {"outcome": crossing.outcome, "attempts": crossing.attempts,
                "discount_pct": None if crossing.value is None else crossing.value.discount_pct}


async def run_demo(store: Store, *, customers: int = 20, seed: int = 0,
                   model: str = "sim") -> dict[str, Any]:
    """Run the demo on a virtual clock; pending approvals lapse to their fallback."""
    runtime = Runtime(store, clock=VirtualClock(), default_model=model)
    register(runtime)
    for i in range(customers):
        customer = Customer(customer_id=f"C-{i:04d}", monthly_charges=20.0 + (i * 7) % 90,
                            tenure_months=(i * 5) % 72)
        await runtime.start("demo.quote", customer, run_id=f"demo-{seed}-{i:04d}",
                            seed=seed * 100_000 + i)
    await runtime.run_until_idle()
    runs = await store.list_runs(agent="demo.quote")
    outcomes = Counter(str((r.result or {}).get("outcome", r.status)) for r in runs)
    report = await audit(store)
    return {"runs": len(runs), "outcomes": dict(sorted(outcomes.items())),
            "audit": report.to_dict(), "example_run": runs[0].run_id if runs else None}
