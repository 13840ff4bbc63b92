"""The two spines of the ablation, making the same renewal decisions on real customers.

Both walk one renewal through the same state machine, at most three decisions::

    window_open -> scoring | human_required
    scoring     -> offer_sent | let_go | human_required
    offer_sent  -> renewed | renewed_with_offer | restructured | churned | human_required

- **P5, shared state machine, narrow proposal**: the model proposes ``{"to_state": ...}``;
  a verifier checks it is a legal transition from the current state; the commit is a
  compare-and-swap on the run's state row.
- **P3, event-driven sequencing, wide proposal**: the model proposes a free-form event
  object (a type from a large open vocabulary, attributes, a note); verifiers check the
  type is a known event and the attributes are in policy; the commit appends it to a
  topic, and a deterministic consumer folds the log into the state (an event that is not
  a legal transition from the current state is ignored by the fold).

The simulated model's judgement is shared: one belief over next states, from the customer's
real features (contract, tenure, charges and the data's churn label). P5 asks it for a
state; P3 for an event that expresses one, in any of the words the log accepts.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from threshold.boundary import (
    Accept,
    Boundary,
    Prompt,
    Reject,
    RejectPolicy,
    VerifyContext,
    verifier,
)
from threshold.clock import to_iso
from threshold.effects import EffectContext
from threshold.models import ModelRequest
from threshold.runtime import RunContext, Runtime

P3, P5 = "ablation.p3", "ablation.p5"
TOPIC, STATE_NS = "ablation.renewals", "ablation.state"
MAX_DECISIONS = 3
CONFUSION = 0.05  # how often the simulated model loses track of the current state

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "window_open": ("scoring", "human_required"),
    "scoring": ("offer_sent", "let_go", "human_required"),
    "offer_sent": ("renewed", "renewed_with_offer", "restructured", "churned",
                   "human_required"),
}
STATES = ("window_open", "scoring", "offer_sent", "let_go", "renewed", "renewed_with_offer",
          "restructured", "churned", "human_required")
StateName = Literal["window_open", "scoring", "offer_sent", "let_go", "renewed",
                    "renewed_with_offer", "restructured", "churned", "human_required"]

# The log's vocabulary: several words per transition, and events that move nothing.
EVENT_STATES: dict[str, str | None] = {
    "scoring_started": "scoring", "risk_assessed": "scoring", "renewal_review_opened": "scoring",
    "offer_sent": "offer_sent", "offer_made": "offer_sent", "discount_offered": "offer_sent",
    "retention_offer_emailed": "offer_sent",
    "let_go": "let_go", "renewal_declined_by_agent": "let_go", "no_retention_needed": "let_go",
    "contract_renewed": "renewed", "renewal_confirmed": "renewed",
    "renewed_with_discount": "renewed_with_offer", "offer_accepted": "renewed_with_offer",
    "plan_changed": "restructured", "contract_restructured": "restructured",
    "customer_churned": "churned", "contract_cancelled": "churned",
    "handoff_to_human": "human_required", "escalated": "human_required",
    "note_added": None, "reminder_sent": None, "customer_contacted": None, "no_action": None,
}
_WORDS = {state: sorted(e for e, s in EVENT_STATES.items() if s == state) for state in STATES}
_NOTES = ("customer is price sensitive", "long tenure, loyal", "prefers email",
          "asked about fiber upgrade", "complained about billing", "no recent contact",
          "competitor offer mentioned", "happy with support")


class NextState(BaseModel):
    """P5's narrow proposal: one state."""

    model_config = ConfigDict(extra="forbid")
    to_state: StateName


class LogEvent(BaseModel):
    """P3's wide proposal: a free-form event for the log."""

    model_config = ConfigDict(extra="forbid")
    type: str = Field(min_length=1, max_length=64)
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)
    note: str = Field(default="", max_length=280)


@verifier("legal_transition", version="1")
def legal_transition(proposal: NextState, ctx: VerifyContext) -> Accept | Reject:
    allowed = TRANSITIONS.get(str(ctx.inputs["state"]), ())
    if proposal.to_state not in allowed:
        return Reject("sm.illegal_transition",
                      f"{ctx.inputs['state']} cannot move to {proposal.to_state}",
                      field="to_state", hint=f"choose one of {', '.join(allowed)}")
    return Accept()


@verifier("known_event", version="1")
def known_event(event: LogEvent, ctx: VerifyContext) -> Accept | Reject:
    if event.type not in EVENT_STATES:
        return Reject("log.unknown_event", f"{event.type!r} is not an event of this log",
                      field="type", hint="use a registered event type")
    return Accept()


@verifier("attributes_in_policy", version="1")
def attributes_in_policy(event: LogEvent, ctx: VerifyContext) -> Accept | Reject:
    pct = event.attributes.get("discount_pct", 0)
    if not isinstance(pct, int | float) or isinstance(pct, bool) or not 0 <= pct <= 30:
        return Reject("policy.discount", f"discount_pct {pct!r} is outside 0..30",
                      field="attributes")
    return Accept()


_PROMPT = ("Customer {customer_id}: {contract} contract, {tenure_months} months, "
           "${monthly_charges}/month, {internet_service} internet. The renewal is in state "
           "{state}. ")


def belief(inputs: dict[str, Any], state: str) -> dict[str, float]:
    """The simulated model's judgement of the next state (not a verified fact)."""
    churn, tenure = bool(inputs["churn"]), int(inputs["tenure_months"])
    monthly = inputs["contract"] == "Month-to-month"
    if state == "window_open":
        return {"scoring": 0.9, "human_required": 0.1}
    if state == "scoring":
        let_go = 0.45 if churn and monthly else 0.25 if churn else 0.05
        return {"offer_sent": 0.9 - let_go, "let_go": let_go, "human_required": 0.1}
    loyal = min(tenure / 72.0, 1.0)
    if churn:
        return {"churned": 0.45, "restructured": 0.2, "renewed_with_offer": 0.2,
                "renewed": 0.05, "human_required": 0.1}
    return {"renewed": 0.3 + 0.3 * loyal, "renewed_with_offer": 0.45 - 0.3 * loyal,
            "restructured": 0.1, "churned": 0.05, "human_required": 0.1}


def _draw(rng: random.Random, weights: dict[str, float]) -> str:
    names = sorted(weights)
    return rng.choices(names, weights=[weights[n] for n in names])[0]


def _target(rng: random.Random, request: ModelRequest) -> str:
    inputs = dict(request.inputs)
    if rng.random() < CONFUSION:
        return rng.choice(STATES)
    return _draw(rng, belief(inputs, str(inputs["state"])))


def narrow_generator(rng: random.Random, request: ModelRequest) -> dict[str, Any]:
    return {"to_state": _target(rng, request)}


def wide_generator(rng: random.Random, request: ModelRequest) -> dict[str, Any]:
    target = _target(rng, request)
    if rng.random() < CONFUSION:
        kind = rng.choice(sorted(EVENT_STATES))
    else:
        kind = rng.choice(_WORDS[target] or ["note_added"])
    attributes: dict[str, Any] = {"channel": rng.choice(["email", "phone", "portal"])}
    if EVENT_STATES.get(kind) in ("offer_sent", "renewed_with_offer"):
        attributes["discount_pct"] = rng.choice([0, 5, 10, 15, 20, 25, 30, 40])
        attributes["term_months"] = rng.choice([12, 24])
    return {"type": kind, "attributes": attributes, "note": rng.choice(_NOTES)}


def customer_inputs(customer: Any) -> dict[str, Any]:
    return {"customer_id": customer.customer_id, "contract": customer.contract,
            "tenure_months": customer.tenure_months,
            "monthly_charges": customer.monthly_charges,
            "internet_service": customer.internet_service, "churn": customer.churn}


def register_spines(runtime: Runtime) -> None:
    """Define ``ablation.p3`` and ``ablation.p5`` (and their sim generators) on ``runtime``."""
    store = runtime.store
    runtime.models.register_sim_generator(NextState, narrow_generator)
    runtime.models.register_sim_generator(LogEvent, wide_generator)

    async def cas_state(proposal: NextState, effect: EffectContext) -> dict[str, Any]:
        row = await store.get_record(STATE_NS, effect.run_id)
        version = 0 if row is None else row.version
        written = await store.cas_record(STATE_NS, effect.run_id, expected_version=version,
                                         value={"state": proposal.to_state},
                                         now=to_iso(effect.now))
        return {"version": None if written is None else written.version}

    async def append_event(event: LogEvent, effect: EffectContext) -> dict[str, Any]:
        offset = await store.append_topic(
            TOPIC, key=effect.run_id, payload=event.model_dump(mode="json"),
            headers={"run_id": effect.run_id, "key": effect.key}, event_time=to_iso(effect.now),
            now=to_iso(effect.now))
        return {"offset": offset}

    policy = RejectPolicy(max_attempts=3)
    narrow = Boundary("p5.transition", output=NextState, verifiers=[legal_transition],
                      commit=cas_state, on_reject=policy, prompt=Prompt(
                          "p5.transition", "1", _PROMPT + "Allowed next states: {allowed}. "
                          "Choose the next state."))
    wide = Boundary("p3.event", output=LogEvent, verifiers=[known_event, attributes_in_policy],
                    commit=append_event, on_reject=policy, prompt=Prompt(
                        "p3.event", "1", _PROMPT + "Write the next event for the renewal "
                        "log as a JSON object with a type, attributes and a note."))

    @runtime.agent(P5, version="1")
    async def p5(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        state, states = "window_open", ["window_open"]
        for _ in range(MAX_DECISIONS):
            if state not in TRANSITIONS:
                break
            crossing = await ctx.cross(narrow, {**inp, "state": state,
                                                "allowed": ", ".join(TRANSITIONS[state])})
            new = crossing.value.to_state if crossing.value is not None else "human_required"
            await ctx.event("transition", frm=state, to=new, committed=crossing.committed)
            state = new
            states.append(state)
        return {"final": state, "states": states}

    @runtime.agent(P3, version="1")
    async def p3(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        state, states = "window_open", ["window_open"]
        for _ in range(MAX_DECISIONS):
            if state not in TRANSITIONS:
                break
            crossing = await ctx.cross(wide, {**inp, "state": state})
            if crossing.value is None:
                new: str | None = "human_required"
            else:
                moved = EVENT_STATES.get(crossing.value.type)
                new = moved if moved in TRANSITIONS[state] else None  # the fold ignores it
            await ctx.event("fold", event=None if crossing.value is None
                            else crossing.value.type, frm=state, to=new or state)
            if new is not None:
                state = new
                states.append(state)
        return {"final": state, "states": states}
