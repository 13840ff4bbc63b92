"""A crafted divergence case: two scripted model versions whose every difference is known.

One boundary, ``quote`` (a discount, capped by a verifier that lets the model retry),
used by two consumers, ``div.quote`` and ``div.review``. Per customer, ``scripted:v1`` and
``scripted:v2`` answer:

    customer  v1            v2                      replay under v2
    c0        10            10                      identical
    c1        10            20                      changed (another commit)
    c2        10            50, then 10 on retry    absorbed by the verifier
    c3        10            10 (other whitespace)   identical (same proposal)
    c4        10            45, then 40             changed (aborted instead of committed)
    c5        50, then 60   60, then 70             absorbed by the verifier (aborted either way)

Both consumers see all six customers (run ids ``quote-cN`` and ``review-cN``), so the
expected report is: 12 runs, 4 identical, 4 absorbed (all 4 by the verifier), 4 changed.
With prompt version 2 ("be generous"), v1 answers 25 for c0 and c1 and as before otherwise.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from threshold import (
    Accept,
    Boundary,
    EffectContext,
    ModelRequest,
    Prompt,
    Reject,
    RejectPolicy,
    RunContext,
    Runtime,
    ScriptedModel,
    VerifyContext,
    verifier,
)

CUSTOMERS = [f"c{i}" for i in range(6)]
V1 = {"c0": [10], "c1": [10], "c2": [10], "c3": [10], "c4": [10], "c5": [50, 60]}
V2 = {"c0": [10], "c1": [20], "c2": [50, 10], "c3": [10], "c4": [45, 40], "c5": [60, 70]}
PROMPT_V1 = Prompt("quote", "1", "Customer {customer}: propose a discount.")
PROMPTS = [Prompt("quote", "2", "Customer {customer}: propose a discount. Be generous.")]
DEFAULT_CAP = 30


class Quote(BaseModel):
    discount_pct: int = Field(ge=0, le=100)


def script(answers: dict[str, list[int]], *, spaced: frozenset[str] = frozenset()) -> Any:
    def answer(request: ModelRequest) -> str:
        customer = str(request.inputs["customer"])
        if "generous" in request.messages[1].content and customer in ("c0", "c1"):
            return '{"discount_pct": 25}'
        choices = answers[customer]
        value = choices[min(len(request.feedback), len(choices) - 1)]
        return f'{{ "discount_pct" :  {value} }}' if customer in spaced else \
            f'{{"discount_pct": {value}}}'

    return answer


def _cap(limit: float) -> Any:
    @verifier("discount_cap", version="1")
    def discount_cap(quote: Quote, ctx: VerifyContext) -> Accept | Reject:
        if quote.discount_pct > limit:
            return Reject("policy.discount_cap", f"{quote.discount_pct}% is over {limit:g}%",
                          field="discount_pct", hint=f"at most {limit:g}")
        return Accept()

    return discount_cap


async def send(quote: Quote, effect: EffectContext) -> dict[str, Any]:
    SENT.append(effect.key)
    return {"sent": effect.key}


SENT: list[str] = []  # the "outside world": a real commit appends here


def register(runtime: Runtime, *, policy: Any = None) -> None:
    """Both consumers, and both model versions; ``policy`` (a ``Policy``) sets the cap."""
    cap = DEFAULT_CAP if policy is None else policy.discount.max_pct
    runtime.models.add("scripted:v1", ScriptedModel(script(V1), name="scripted", version="v1"))
    runtime.models.add("scripted:v2", ScriptedModel(script(V2, spaced=frozenset({"c3"})),
                                                    name="scripted", version="v2"))
    quote = Boundary("quote", output=Quote, prompt=PROMPT_V1, verifiers=[_cap(cap)],
                     commit=send, on_reject=RejectPolicy(max_attempts=2))
    for name in ("div.quote", "div.review"):
        def make(agent: str) -> Any:
            async def consumer(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
                crossing = await ctx.cross(quote, {"customer": inp["customer"]})
                await ctx.event("decided", outcome=crossing.outcome)
                return {"outcome": crossing.outcome, "agent": agent,
                        "pct": None if crossing.value is None else crossing.value.discount_pct}

            return consumer

        runtime.agent(name, version="1")(make(name))


async def record(runtime: Runtime) -> None:
    """Start every run under ``scripted:v1`` and run them to the end."""
    register(runtime)
    for customer in CUSTOMERS:
        for agent, prefix in (("div.quote", "quote"), ("div.review", "review")):
            await runtime.start(agent, {"customer": customer}, run_id=f"{prefix}-{customer}",
                                model="scripted:v1")
    await runtime.run_until_idle()
