"""The renewal's gates: policy-file rules as verifiers before every side effect (P4).

Each verifier's version is the policy version, so every verdict in the journal names the
policy that decided it; each reject names the rule and the reason.
"""

from __future__ import annotations

from threshold.apps.renewal.proposals import CloseTerms, Offer
from threshold.boundary import Accept, FunctionVerifier, Reject, Verdict, VerifyContext
from threshold.ids import derive_seed
from threshold.patterns.policy import GateDecision, Policy, check_discount, check_term

HUMAN_ONLY_DISCOUNT_PCT = 50  # above this, only a human may agree, whatever the override


def _verdict(decision: GateDecision, *, retryable: bool) -> Verdict:
    if decision.allowed:
        return Accept(note=f"rule={decision.rule} policy={decision.policy_version}: "
                           f"{decision.reason}")
    return Reject(f"policy.{decision.rule}", decision.reason, retryable=retryable,
                  hint=f"stay within {decision.rule}", field="discount_pct")


def _sample(ctx: VerifyContext) -> float:
    return (derive_seed(ctx.run_id, ctx.step, "review-sample") % 10_000) / 10_000


def discount_gate(policy: Policy) -> FunctionVerifier[Offer | CloseTerms]:
    """Caps and per-tenant overrides from the policy file."""

    def check(value: Offer | CloseTerms, ctx: VerifyContext) -> Verdict:
        tenant = str(ctx.facts.get("tenant", ""))
        decision = check_discount(policy, tenant, value.discount_pct, sample=_sample(ctx))
        return _verdict(decision, retryable=value.discount_pct <= HUMAN_ONLY_DISCOUNT_PCT)

    return FunctionVerifier(check, "gate.discount", policy.version)


def close_gate(policy: Policy) -> FunctionVerifier[CloseTerms]:
    """Auto-close limits: term length, and mergers always need a human."""

    def check(value: CloseTerms, ctx: VerifyContext) -> Verdict:
        if value.discount_pct > HUMAN_ONLY_DISCOUNT_PCT:
            return Reject("policy.human_only_discount", f"{value.discount_pct}% is over "
                          f"{HUMAN_ONLY_DISCOUNT_PCT}%: only a human may agree to it",
                          retryable=False, field="discount_pct")
        decision = check_term(policy, value.term_months, value.merger)
        if decision.allowed:
            return Accept(note=f"rule={decision.rule} policy={decision.policy_version}")
        return Reject(f"policy.{decision.rule}", decision.reason,
                      retryable=not value.merger, field="term_months")

    return FunctionVerifier(check, "gate.close", policy.version)


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
