"""Small builders shared by tests (plain functions, not fixtures)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from threshold import (
    Accept,
    Boundary,
    EffectContext,
    Prompt,
    Reject,
    RejectPolicy,
    Runtime,
    VerifyContext,
    VirtualClock,
    open_store,
    verifier,
)
from threshold.models import ModelRegistry, ScriptedModel
from threshold.models._scripted import Script


class Offer(BaseModel):
    action: Literal["renew", "escalate", "churn"]
    discount_pct: int = Field(ge=0, le=100)


@verifier("cap", version="2")
def cap(offer: Offer, ctx: VerifyContext) -> Accept | Reject:
    if offer.discount_pct > 30:
        return Reject("policy.cap", f"{offer.discount_pct}% is over 30%", retryable=True,
                      field="discount_pct", hint="offer at most 30")
    return Accept()


def offer_json(action: str = "renew", pct: int = 10) -> str:
    return json.dumps({"action": action, "discount_pct": pct})


class Ledger:
    """An in-test side-effect target that counts performs per idempotency key."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def commit(self, offer: Offer, effect: EffectContext) -> dict[str, Any]:
        self.calls.append(effect.key)
        return {"sent": offer.discount_pct}


def offer_boundary(ledger: Ledger | None = None, *, policy: RejectPolicy | None = None,
                   **kwargs: Any) -> Boundary[Offer]:
    return Boundary("offer", output=Offer, prompt=Prompt("offer", "1", "Customer {c}."),
                    verifiers=[cap], commit=None if ledger is None else ledger.commit,
                    on_reject=policy, **kwargs)


def scripted_runtime(script: Script, url: str = "memory://", **kwargs: Any) -> tuple[
        Runtime, ScriptedModel]:
    model = ScriptedModel(script)
    models = ModelRegistry()
    models.add("scripted", model)
    runtime = Runtime(open_store(url), clock=VirtualClock(), models=models,
                      default_model="scripted", **kwargs)
    return runtime, model
