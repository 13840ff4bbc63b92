"""The crossing every store benchmark times: the sim proposer, the schema check plus two
verifiers, and one effect. Shared so SQLite and PostgreSQL figures measure the same work."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from threshold import Accept, Boundary, EffectContext, Prompt, Reject, VerifyContext, verifier
from threshold.models import ErrorProfile, SimModel


class Offer(BaseModel):
    action: Literal["renew", "escalate", "churn"]
    discount_pct: int = Field(ge=0, le=30)


@verifier("cap", version="1")
def cap(offer: Offer, ctx: VerifyContext) -> Accept | Reject:
    return Accept() if offer.discount_pct <= 30 else Reject("policy.cap", "over cap")


@verifier("no_churn_discount", version="1")
def no_churn_discount(offer: Offer, ctx: VerifyContext) -> Accept | Reject:
    ok = offer.action != "churn" or offer.discount_pct == 0
    return Accept() if ok else Reject("rule.churn", "no discount on churn")


async def send(offer: Offer, effect: EffectContext) -> dict[str, Any]:
    return {"key": effect.key}


BOUNDARY = Boundary("offer", output=Offer, prompt=Prompt("offer", "1", "Customer {c}."),
                    verifiers=[cap, no_churn_discount], commit=send)


def error_free_sim() -> SimModel:
    """The benchmarks measure the runtime, not retries: no error modes, legal offers."""
    sim = SimModel("v1", profile=ErrorProfile())
    sim.register(Offer, lambda rng, request: Offer(action=rng.choice(["renew", "escalate"]),
                                                   discount_pct=rng.randint(0, 30)))
    return sim
