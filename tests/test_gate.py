"""P4 gates: policy rules as verifiers that record rule, reason and policy version."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from helpers import Ledger, Offer, offer_json, scripted_runtime
from threshold import (
    Accept,
    Boundary,
    Prompt,
    Reject,
    RejectPolicy,
    RunContext,
    VerifyContext,
    audit,
)
from threshold.apps.renewal.customers import data_file
from threshold.clock import DEFAULT_EPOCH
from threshold.errors import StaleWriteError, UnauthorizedError
from threshold.patterns.gate import (
    ReviewQueue,
    discount_gate,
    review_sample,
    role_gate,
    trigger_gate,
)
from threshold.patterns.hitl import breach_routes
from threshold.patterns.policy import Policy, load_policy
from threshold.runtime import Runtime

POLICY = load_policy(data_file("policy.yaml"))
SPECIALIST = "carol@counsel+human_specialist"


def with_sample_rate(policy: Policy, rate: float) -> Policy:
    return policy.model_copy(update={
        "discount": policy.discount.model_copy(update={"review_sample_rate": rate})})


def gated_boundary(ledger: Ledger, policy: Policy = POLICY,
                   review: ReviewQueue | None = None) -> Boundary[Offer]:
    return Boundary("offer", output=Offer, prompt=Prompt("offer", "1", "Customer {c}."),
                    verifiers=[discount_gate(policy, review=review)], commit=ledger.commit,
                    on_reject=RejectPolicy(routes=breach_routes(policy)))


def register(runtime: Runtime, boundary: Boundary[Offer]) -> None:
    @runtime.agent("renew")
    async def renew(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        crossing = await ctx.cross(boundary, {"c": inp["c"]}, facts={"tenant": inp["tenant"]})
        return crossing.to_json()


def test_ninety_percent_discount_is_denied_and_routed_to_a_human(tmp_path: Path) -> None:
    """A 90 % discount is rejected by the gate (rule, reason, policy v7 recorded) and
    suspends the run in an approval for counsel+human_specialist; approving commits it."""
    runtime, model = scripted_runtime([offer_json(pct=90)], f"sqlite:///{tmp_path / 'g.db'}")
    ledger = Ledger()
    register(runtime, gated_boundary(ledger))

    async def go() -> None:
        store = runtime.store
        await runtime.start("renew", {"c": "Acme", "tenant": "C-999"}, run_id="r1")
        await runtime.run_until_idle()
        run = await store.get_run("r1")
        assert run is not None and run.status == "waiting"
        assert len(model.requests) == 1  # routed at once, no retry spent on a breach
        [gate_verdict] = [v for v in await store.list_verdicts("r1")
                          if v.verifier == "policy.discount"]
        assert (gate_verdict.verdict, gate_verdict.code, gate_verdict.verifier_version) == (
            "reject", "policy.discount.max_pct", "v7")
        assert "90 % is above the policy cap of 30 %" in (gate_verdict.message or "")
        assert "[rule discount.max_pct, policy v7]" in (gate_verdict.message or "")
        [approval] = await store.list_approvals(status="pending")
        assert approval.role == "counsel+human_specialist"
        assert approval.value == {"action": "renew", "discount_pct": 90}
        assert "policy v7" in approval.reason

        await runtime.decide(approval.approval_id, approve=True, principal=SPECIALIST,
                             comment="strategic account, CFO signed")
        await runtime.run_until_idle()
        run = await store.get_run("r1")
        assert run is not None and run.status == "completed"
        assert run.result["outcome"] == "committed"
        assert run.result["decided_by"] == SPECIALIST
        assert ledger.calls == ["r1/1/offer"]
        [human] = [v for v in await store.list_verdicts("r1") if v.verifier == "human"]
        assert (human.verdict, human.decided_by, human.message) == (
            "accept", SPECIALIST, "strategic account, CFO signed")
        decided = await store.get_approval(approval.approval_id)
        assert decided is not None and human.at == decided.decided_at  # who, when, why
        report = await audit(store)
        assert report.ok and report.commits_by_override == 1

    asyncio.run(go())


def test_denying_the_routed_discount_ends_the_crossing_without_a_commit() -> None:
    """A human denial of the gated 90 % discount resumes the run with outcome denied and
    performs no side effect."""
    runtime, _ = scripted_runtime([offer_json(pct=90)])
    ledger = Ledger()
    register(runtime, gated_boundary(ledger))

    async def go() -> None:
        await runtime.start("renew", {"c": "Acme", "tenant": "C-999"}, run_id="r1")
        await runtime.run_until_idle()
        [approval] = await runtime.store.list_approvals(status="pending")
        await runtime.decide(approval.approval_id, approve=False, principal=SPECIALIST,
                             comment="no")
        await runtime.run_until_idle()
        run = await runtime.store.get_run("r1")
        assert run is not None and run.status == "completed"
        assert run.result["outcome"] == "denied"
        assert ledger.calls == []

    asyncio.run(go())


def test_a_principal_holding_only_one_of_the_required_roles_is_refused() -> None:
    """The discount escalation needs counsel and human_specialist together: a principal
    with one of them is refused, the refusal is journaled, the approval stays pending."""
    runtime, _ = scripted_runtime([offer_json(pct=90)])
    register(runtime, gated_boundary(Ledger()))

    async def go() -> None:
        await runtime.start("renew", {"c": "Acme", "tenant": "C-999"}, run_id="r1")
        await runtime.run_until_idle()
        [approval] = await runtime.store.list_approvals(status="pending")
        with pytest.raises(UnauthorizedError):
            await runtime.decide(approval.approval_id, approve=True,
                                 principal="dave@human_specialist")
        refused = await runtime.store.list_events("r1", kind="approval.refused")
        assert [e.data["principal"] for e in refused] == ["dave@human_specialist"]
        still = await runtime.store.get_approval(approval.approval_id)
        assert still is not None and still.status == "pending"

    asyncio.run(go())


def test_an_allowed_discount_records_rule_and_policy_in_the_accept() -> None:
    """A 10 % discount commits, and its accept verdict names the rule and policy version."""
    runtime, _ = scripted_runtime([offer_json(pct=10)])
    ledger = Ledger()
    register(runtime, gated_boundary(ledger))

    async def go() -> None:
        await runtime.start("renew", {"c": "Acme", "tenant": "C-999"}, run_id="r1")
        await runtime.run_until_idle()
        [gate_verdict] = [v for v in await runtime.store.list_verdicts("r1")
                          if v.verifier == "policy.discount"]
        assert gate_verdict.verdict == "accept" and gate_verdict.verifier_version == "v7"
        assert (gate_verdict.message or "").startswith("rule=discount.max_pct policy=v7 ")
        assert ledger.calls == ["r1/1/offer"]

    asyncio.run(go())


def test_a_tenant_override_raises_that_tenants_cap_only() -> None:
    """38 % passes (with a warn) under C-012's 40 % override cap and is refused for another
    tenant by discount.max_pct."""
    gate = discount_gate(POLICY)

    async def go() -> None:
        offer = Offer(action="renew", discount_pct=38)
        strategic = VerifyContext("r", 1, "offer", {}, DEFAULT_EPOCH, facts={"tenant": "C-012"})
        allowed = await gate.check(offer, strategic)
        assert isinstance(allowed, Accept)
        assert "override cap of 40 %" in allowed.note and " warn " in allowed.note
        other = VerifyContext("r", 1, "offer", {}, DEFAULT_EPOCH, facts={"tenant": "C-100"})
        refused = await gate.check(offer, other)
        assert isinstance(refused, Reject) and refused.code == "policy.discount.max_pct"

    asyncio.run(go())


def test_warn_band_is_journaled_once_and_sampled_deterministically() -> None:
    """A 25 % discount is accepted with a warn; the warn is journaled exactly once however
    often the same attempt is verified, and its sampling is a function of run and proposal."""
    runtime, _ = scripted_runtime([offer_json(pct=25)])
    queue = ReviewQueue(runtime.store)
    register(runtime, gated_boundary(Ledger(), review=queue))
    offer = Offer(action="renew", discount_pct=25)

    async def go() -> None:
        await runtime.start("renew", {"c": "Acme", "tenant": "C-999"}, run_id="r1")
        await runtime.run_until_idle()
        [verdict] = [v for v in await runtime.store.list_verdicts("r1")
                     if v.verifier == "policy.discount"]
        assert "rule=discount.warn_pct policy=v7 warn" in (verdict.message or "")
        # Re-verifying the same attempt (as a resume or a replay would) adds nothing.
        ctx = VerifyContext("r1", 1, "offer", {"c": "Acme"}, DEFAULT_EPOCH,
                            facts={"tenant": "C-999"})
        await discount_gate(POLICY, review=queue).check(offer, ctx)
        warns = await runtime.store.list_events("r1", kind="gate.warn")
        assert len(warns) == 1
        expected = review_sample("r1", offer) < POLICY.discount.review_sample_rate
        assert warns[0].data["sampled"] is expected
        [(_, item)] = await queue.items(status=None)
        assert (item.rule, item.policy_version, item.sampled) == ("discount.warn_pct", "v7",
                                                                 expected)
        assert review_sample("r1", offer) == review_sample("r1", offer)
        assert review_sample("r1", offer) != review_sample("r2", offer)

    asyncio.run(go())


def test_sampled_warns_wait_in_the_review_queue_until_resolved() -> None:
    """With every warn sampled, the item is pending review; a reviewer resolves it once,
    and a second resolution is refused as stale."""
    policy = with_sample_rate(POLICY, 1.0)
    runtime, _ = scripted_runtime([offer_json(pct=22)])
    queue = ReviewQueue(runtime.store)
    register(runtime, gated_boundary(Ledger(), policy, review=queue))

    async def go() -> None:
        await runtime.start("renew", {"c": "Acme", "tenant": "C-999"}, run_id="r1")
        await runtime.run_until_idle()
        [(key, item)] = await queue.items()
        assert item.sampled and item.status == "pending" and item.value["discount_pct"] == 22
        await queue.resolve(key, principal="rita@reviewer", ok=True, comment="fine",
                            now="2026-01-02T00:00:00+00:00")
        assert await queue.items() == []
        with pytest.raises(StaleWriteError):
            await queue.resolve(key, principal="rita@reviewer", ok=False,
                                now="2026-01-02T00:00:00+00:00")
        reviewed = await runtime.store.list_events("r1", kind="gate.reviewed")
        assert [e.data["by"] for e in reviewed] == ["rita@reviewer"]

    asyncio.run(go())


def test_role_and_trigger_gates_refuse_without_retry() -> None:
    """A role gate refuses a principal without the role, and a trigger gate refuses when the
    policy's trigger applies; both are non-retryable and name policy v7."""
    role = role_gate(POLICY, "account_manager")
    pii = trigger_gate(POLICY, "pii_present", when=lambda v, c: bool(c.facts.get("pii")))
    offer = Offer(action="renew", discount_pct=5)

    async def go() -> None:
        def ctx(**facts: Any) -> VerifyContext:
            return VerifyContext("r", 1, "offer", {}, DEFAULT_EPOCH, facts=facts)

        refused = await role.check(offer, ctx(principal="ivan@intern"))
        assert isinstance(refused, Reject) and refused.code == "policy.role.account_manager"
        assert not refused.retryable and role.version == "v7"
        allowed = await role.check(offer, ctx(principal="amy@account_manager"))
        assert allowed.kind == "accept"
        flagged = await pii.check(offer, ctx(pii=True))
        assert isinstance(flagged, Reject)
        assert flagged.code == "policy.escalation_triggers.pii_present"
        assert "privacy_officer" in flagged.hint
        assert (await pii.check(offer, ctx(pii=False))).kind == "accept"

    asyncio.run(go())


def test_breach_routes_send_each_trigger_to_its_role() -> None:
    """The policy's escalation triggers become reject routes with approval roles that the
    runtime can authorize."""
    routes = breach_routes(POLICY)
    assert routes["policy.discount."].role == "counsel+human_specialist"
    assert routes["policy.auto_close.require_human_for_mergers"].role == "human_specialist"
    assert routes["policy.escalation_triggers.pii_present"].role == "privacy_officer"
