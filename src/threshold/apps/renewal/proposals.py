"""What the models propose at each stage of a renewal, and the sim's grounded generators.

The generators give ``sim`` a plausible first guess from the customer's real row (the
proposer is still stochastic and still makes the sim profile's errors); nothing here
decides an outcome: verifiers, humans and the customer model do.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import BaseModel, Field

from threshold.models import ModelRegistry, ModelRequest

Source = Literal["usage", "network", "billing", "support"]
SOURCES: tuple[Source, ...] = ("usage", "network", "billing", "support")


class SignalReport(BaseModel):
    """One sub-agent's read of one signal source (P1: each is its own proposer)."""

    source: Source
    risk: int = Field(ge=0, le=100)
    finding: str = Field(max_length=200)


class Strategy(BaseModel):
    """Day -60: the risk score and the approach for this renewal."""

    risk_score: int = Field(ge=0, le=100)
    approach: Literal["standard", "retention_offer", "restructure", "let_go"]
    max_discount_pct: int = Field(ge=0, le=100)


class Offer(BaseModel):
    """Day -30: the offer that crosses the pricing boundary and is mailed."""

    discount_pct: int = Field(ge=0, le=100)
    term_months: Literal[12, 24, 36]
    plan: Literal["current", "upgrade", "downgrade", "bundle"]
    headline: str = Field(max_length=120)


class CloseTerms(BaseModel):
    """Day -7: the final terms after the customer's reply."""

    decision: Literal["renew", "restructure", "release"]
    discount_pct: int = Field(ge=0, le=100)
    term_months: int = Field(ge=1, le=60)
    merger: bool = False


def _signal(rng: random.Random, request: ModelRequest) -> SignalReport:
    i = request.inputs
    source: Source = i["source"]
    base = {
        "usage": 60 - min(int(i["tenure_months"]), 72) * 0.6,
        "network": 45 if i["internet_service"] == "Fiber optic" else 20,
        "billing": 50 if i["payment_method"] == "Electronic check" else 20,
        "support": 45 if i["tech_support"] == "No" else 15,
    }[source]
    risk = max(0, min(100, int(base + rng.gauss(0, 12))))
    return SignalReport(source=source, risk=risk, finding=f"{source} risk {risk}")


def _strategy(rng: random.Random, request: ModelRequest) -> Strategy:
    i = request.inputs
    risk = max(0, min(100, int(i["signal_risk"] + rng.gauss(0, 8))))
    if i.get("plan_eol"):
        approach = "restructure"
    elif risk >= 55:
        approach = "retention_offer"
    elif risk <= 15 and rng.random() < 0.3:
        approach = "let_go"
    else:
        approach = "standard"
    cap = 0 if approach in ("standard", "let_go") else int(min(30, 5 + risk // 3))
    return Strategy(risk_score=risk, approach=approach, max_discount_pct=cap)


def _offer(rng: random.Random, request: ModelRequest) -> Offer:
    i = request.inputs
    cap = int(i["max_discount_pct"])
    discount = 0 if cap == 0 else rng.randint(max(0, cap - 10), cap)
    plan = "upgrade" if i.get("plan_eol") else rng.choice(["current", "current", "bundle"])
    term = 12 if i["contract"] == "Month-to-month" else rng.choice([12, 24, 36])
    return Offer(discount_pct=discount, term_months=term, plan=plan,
                 headline=f"{discount}% off a {term}-month renewal")


def _close(rng: random.Random, request: ModelRequest) -> CloseTerms:
    i = request.inputs
    reply = i["reply"]
    merger = bool(i.get("merger"))
    if reply == "accept":
        return CloseTerms(decision="restructure" if i["plan"] in ("upgrade", "downgrade")
                          else "renew",
                          discount_pct=int(i["offered_pct"]), term_months=int(i["term_months"]),
                          merger=merger)
    if reply == "counter":
        return CloseTerms(decision="renew", discount_pct=int(i["counter_pct"]),
                          term_months=int(i["term_months"]), merger=merger)
    return CloseTerms(decision="release", discount_pct=0, term_months=int(i["term_months"]),
                      merger=merger)


def register_generators(models: ModelRegistry) -> None:
    """Teach every sim version this agent's output types."""
    generators: dict[type[BaseModel], Any] = {
        SignalReport: _signal, Strategy: _strategy, Offer: _offer, CloseTerms: _close}
    for output, generator in generators.items():
        models.register_sim_generator(output, generator)
