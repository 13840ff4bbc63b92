"""The renewal's gates (P4): the policy file's rules from ``threshold.patterns.gate``, plus
the two rules that belong to this agent alone.

Every gate verifier's version is the policy version, so each verdict in the journal names
the policy, the rule and the reason that decided it.
"""

from __future__ import annotations

from typing import Any

from threshold.apps.renewal.proposals import CloseTerms, Offer
from threshold.boundary import Accept, FunctionVerifier, Reject, Verdict, VerifyContext
from threshold.patterns.gate import discount_gate, term_gate
from threshold.patterns.policy import Policy

HUMAN_ONLY_DISCOUNT_PCT = 50  # above this, only a human may agree, whatever the override


def offer_gates(policy: Policy) -> list[Any]:
    return [discount_gate(policy), offer_fits_strategy()]


def close_gates(policy: Policy) -> list[Any]:
    return [discount_gate(policy), term_gate(policy, merger_fact="merger"),
            human_only_discount()]


def human_only_discount() -> FunctionVerifier[CloseTerms]:
    """Discounts over 50 % are for a person to grant, never the agent."""

    def check(value: CloseTerms, ctx: VerifyContext) -> Verdict:
        if value.discount_pct > HUMAN_ONLY_DISCOUNT_PCT:
            return Reject("policy.human_only_discount", f"{value.discount_pct}% is over "
                          f"{HUMAN_ONLY_DISCOUNT_PCT}%: only a human may agree to it",
                          retryable=False, field="discount_pct")
        return Accept()

    return FunctionVerifier(check, "rule.human_only_discount", "1")


def offer_fits_strategy() -> FunctionVerifier[Offer]:
    """Business rule: the offer stays within the strategy's own discount ceiling, and a
    month-to-month customer gets a 12-month term first."""

    def check(value: Offer, ctx: VerifyContext) -> Verdict:
        ceiling = int(ctx.inputs["max_discount_pct"])
        if value.discount_pct > ceiling:
            return Reject("rule.over_strategy", f"{value.discount_pct}% is over the "
                          f"strategy's {ceiling}%", field="discount_pct",
                          hint=f"offer at most {ceiling}%")
        if ctx.inputs["contract"] == "Month-to-month" and value.term_months != 12:
            return Reject("rule.first_term", "month-to-month customers start with 12 months",
                          field="term_months", hint="use 12")
        return Accept()

    return FunctionVerifier(check, "rule.offer_fits_strategy", "1")
