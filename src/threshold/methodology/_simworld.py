"""The simulated world of the reliability Monte Carlo: customers, the offer a competent
model proposes, the ground truth, the boundary at three strengths and four compositions,
the downstream billing a saga checks, and a simulated approver.

An offer is acceptable when it is schema-valid, its term is 12 or 24 months, and its
discount is at most 30 %, or at most 40 % for a high-risk customer *with a human's
sign-off* (the business rule for exceptions). The model proposes acceptable offers (an
exception for high-risk customers) and errs by its error profile; the judge and the
approver know the ground truth, the verifiers only what their rules check.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from threshold.boundary import (
    Abort,
    Accept,
    Boundary,
    Escalate,
    Prompt,
    Reject,
    RejectPolicy,
    Verifier,
    VerifyContext,
    verifier,
)
from threshold.clock import from_iso
from threshold.effects import EffectContext
from threshold.errors import ConfigError, SagaAborted
from threshold.ids import derive_seed
from threshold.models import ErrorProfile, ModelRequest
from threshold.runtime import HUMAN_VERIFIER, SLA_ACTOR, Crossing, RunContext, Runtime
from threshold.store import ApprovalRecord, CrossingRecord, VerdictRecord

AUTO_CAP, EXCEPTION_CAP, TERMS = 30, 40, (12, 24)
GOLDEN = 0.6180339887498949
APPROVER = "sim-approver@approver"
MODEL_SPEC = "sim:reliability"

Strength = Literal["schema", "policy", "rules"]
STRENGTHS: tuple[Strength, ...] = ("schema", "policy", "rules")


@dataclass(frozen=True, slots=True)
class Composition:
    """A pattern composition around the one boundary the agent crosses."""

    name: str
    max_attempts: int
    escalate: bool
    saga: bool
    description: str


COMPOSITIONS: dict[str, Composition] = {c.name: c for c in (
    Composition("bare", 1, False, False, "propose once; commit or abort"),
    Composition("retry", 3, False, False, "+ retry with verifier feedback (3 attempts)"),
    Composition("escalate", 3, True, False, "+ escalation of exceptions and exhausted "
                "retries to a simulated approver"),
    Composition("saga", 3, True, True, "+ a saga: a billing step that checks the offer "
                "downstream, compensating the offer when billing refuses"),
)}


# --- the world ----------------------------------------------------------------------------


class Offer(BaseModel):
    customer: str
    discount_pct: int = Field(ge=0, le=100)
    term_months: int = Field(ge=1, le=36)


class Customer(BaseModel):
    id: str
    risk: Literal["normal", "high"]


class Batch(BaseModel):
    customers: list[Customer]


def error_profile(rate: float) -> ErrorProfile:
    """Per-call error modes summing to ``rate``; no transport faults, so every error is
    one the boundary can see. Half of the out-of-range values stay legal by the schema and
    only a policy or business rule catches them."""
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"a model error rate is in [0, 1], not {rate}")
    return ErrorProfile(schema_break=0.2 * rate, out_of_range=0.5 * rate,
                        missing_field=0.1 * rate, extra_field=0.1 * rate, refusal=0.1 * rate,
                        latency=0.0, server_error=0.0, correction=0.7)


def propose(rng: random.Random, request: ModelRequest) -> Offer:
    """What a competent model proposes: within policy, an exception for high risk."""
    high = request.inputs.get("risk") == "high"
    low, top = (AUTO_CAP + 1, EXCEPTION_CAP) if high else (0, AUTO_CAP)
    return Offer(customer=str(request.inputs.get("customer", "")),
                 discount_pct=rng.randint(low, top), term_months=rng.choice(TERMS))


@dataclass(frozen=True, slots=True)
class World:
    """The ground truth the judge and the simulated approver know; verifiers do not."""

    seed: int
    exception_rate: float

    def risk(self, customer: str) -> Literal["normal", "high"]:
        """High for an exact share of customers: customer ``c<i>`` is high-risk when the
        i-th point of a seeded golden-ratio sequence falls below the exception rate, so a
        small sample holds the intended share instead of whatever a coin gave."""
        try:
            index = int(customer.removeprefix("c"))
        except ValueError:
            return "normal"
        offset = random.Random(derive_seed(self.seed, "risk")).random()
        draw = (offset + index * GOLDEN) % 1.0
        return "high" if draw < self.exception_rate else "normal"

    def customer(self, index: int) -> Customer:
        name = f"c{index:06d}"
        return Customer(id=name, risk=self.risk(name))

    def acceptable(self, value: Any, *, signed_off: bool) -> bool:
        try:
            offer = Offer.model_validate(value)
        except ValidationError:
            return False
        if offer.term_months not in TERMS or offer.discount_pct > EXCEPTION_CAP:
            return False
        if offer.discount_pct <= AUTO_CAP:
            return True
        return signed_off and self.risk(offer.customer) == "high"

    def judge(self, crossing: CrossingRecord, verdicts: Sequence[VerdictRecord]) -> bool:
        """A commit is correct when acceptable, counting a person's accept as sign-off."""
        signed = any(v.verifier == HUMAN_VERIFIER and v.verdict == "accept"
                     and v.decided_by not in (None, SLA_ACTOR) for v in verdicts)
        return self.acceptable(crossing.outcome, signed_off=signed)


# --- boundaries by strength and composition -----------------------------------------------


@verifier("policy.discount", version="1")
def discount_gate(offer: Offer, ctx: VerifyContext) -> Accept | Reject:
    if offer.discount_pct <= AUTO_CAP:
        return Accept()
    if offer.discount_pct <= EXCEPTION_CAP:
        return Reject("policy.discount_exception", f"{offer.discount_pct}% needs sign-off",
                      retryable=False, field="discount_pct")
    return Reject("policy.discount_cap", f"{offer.discount_pct}% is over {EXCEPTION_CAP}%",
                  hint=f"offer at most {AUTO_CAP}%", field="discount_pct")


@verifier("rules.term", version="1")
def term_rule(offer: Offer, ctx: VerifyContext) -> Accept | Reject:
    if offer.term_months in TERMS:
        return Accept()
    return Reject("rules.term", f"a {offer.term_months}-month term is not offered",
                  hint="use 12 or 24 months", field="term_months")


def verifiers_for(strength: Strength) -> Sequence[Verifier[Offer]]:
    table: dict[str, Sequence[Verifier[Offer]]] = {
        "schema": (), "policy": (discount_gate,), "rules": (discount_gate, term_rule)}
    return table[strength]


async def _send(offer: Offer, effect: EffectContext) -> dict[str, Any]:
    return {"offered": offer.customer, "key": effect.key}


def offer_boundary(composition: Composition, strength: Strength) -> Boundary[Offer]:
    human = Escalate(role="approver", reason="needs sign-off", sla=timedelta(hours=4))
    stop: Escalate | Abort = human if composition.escalate else Abort("retry budget exhausted")
    exception: Escalate | Abort = human if composition.escalate else Abort(
        "an exception needs a human and there is none")
    return Boundary(
        "offer", output=Offer, verifiers=verifiers_for(strength), commit=_send,
        prompt=Prompt("renewal-offer", "1", "Offer a renewal to {customer} (risk {risk})."),
        on_reject=RejectPolicy(max_attempts=composition.max_attempts, exhausted=stop,
                               routes={"policy.discount_exception": exception}))


class BillingRefused(Exception):
    """The simulated billing system refuses an offer it cannot book."""


async def _bill(offer: Offer | None, effect: EffectContext) -> dict[str, Any]:
    if offer is None or offer.term_months not in TERMS or offer.discount_pct > EXCEPTION_CAP:
        raise BillingRefused("billing cannot book this offer")
    return {"billed": offer.customer}


async def _withdraw(crossing: Crossing[Offer], effect: EffectContext) -> dict[str, Any]:
    return {"withdrawn": crossing.crossing_id}


def make_agent(composition: Composition, boundary: Boundary[Offer]) -> Callable[
        [RunContext, Batch], Awaitable[dict[str, int]]]:
    from threshold.patterns.saga import Saga

    async def offers(ctx: RunContext, batch: Batch) -> dict[str, int]:
        for customer in batch.customers:
            inputs = {"customer": customer.id, "risk": customer.risk}
            if not composition.saga:
                await ctx.cross(boundary, inputs)
                continue
            try:
                async with Saga(ctx, f"offer-{customer.id}") as saga:
                    crossing = await saga.cross(boundary, inputs, compensate=_withdraw)
                    await saga.step("billing", partial(_bill, crossing.value))
            except SagaAborted:
                pass  # compensated; the journal says why
        return {"customers": len(batch.customers)}

    return offers


class SimApprover:
    """A person with the approver role: decides each request after a seeded delay, right
    with probability ``accuracy`` (right = approve exactly the acceptable proposals)."""

    def __init__(self, runtime: Runtime, world: World, *, accuracy: float, seed: int,
                 minutes: tuple[float, float] = (5.0, 120.0)) -> None:
        self.runtime, self.world, self.accuracy = runtime, world, accuracy
        self.seed, self.minutes = seed, minutes

    def _rng(self, approval: ApprovalRecord) -> random.Random:
        return random.Random(derive_seed(self.seed, "approver", approval.approval_id))

    def _due(self, approval: ApprovalRecord) -> datetime:
        return from_iso(approval.created_at) + timedelta(
            minutes=self._rng(approval).uniform(*self.minutes))

    async def _pending(self) -> list[tuple[datetime, ApprovalRecord]]:
        pending = await self.runtime.store.list_approvals(status="pending")
        return sorted(((self._due(a), a) for a in pending), key=lambda p: (p[0],
                                                                             p[1].approval_id))

    async def next_due(self) -> datetime | None:
        pending = await self._pending()
        return pending[0][0] if pending else None

    async def act(self, now: datetime) -> int:
        done = 0
        for due, approval in await self._pending():
            if due > now:
                break
            rng = self._rng(approval)
            rng.random()  # the draw that set the delay
            right = self.world.acceptable(approval.value, signed_off=True)
            approve = right if rng.random() < self.accuracy else not right
            await self.runtime.decide(approval.approval_id, principal=APPROVER,
                                      approve=approve and approval.value is not None)
            done += 1
        return done
