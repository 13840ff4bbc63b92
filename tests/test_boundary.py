"""The boundary's contract: propose -> verify -> commit | reject, with typed feedback."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from helpers import Ledger, Offer, offer_boundary, offer_json, scripted_runtime
from threshold import Abort, Escalate, RejectPolicy, RunContext, TransportPolicy
from threshold.errors import MalformedResponse, ServerError, UnauthorizedError
from threshold.models import Completion
from threshold.runtime import Crossing


def run_one(script: Any, boundary: Any, **kw: Any) -> tuple[Any, Crossing[Offer], Any]:
    runtime, model = scripted_runtime(script, **kw)
    seen: list[Crossing[Offer]] = []

    @runtime.agent("one")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> str:
        crossing = await ctx.cross(boundary, {"c": "ACME"})
        seen.append(crossing)
        return crossing.outcome

    async def go() -> None:
        await runtime.start("one", {}, run_id="r1")
        await runtime.run_until_idle()

    asyncio.run(go())
    return runtime, seen[-1], model


def test_accepted_proposal_commits_once_with_its_key() -> None:
    """A proposal every verifier accepts is committed once, with the key (run, step, action)."""
    ledger = Ledger()
    _, crossing, _ = run_one([offer_json(pct=10)], offer_boundary(ledger))
    assert crossing.committed and crossing.value == Offer(action="renew", discount_pct=10)
    assert ledger.calls == ["r1/1/offer"]
    assert crossing.effect_result == {"sent": 10}


def test_retry_feeds_verifier_reasons_back_to_the_proposer() -> None:
    """A retryable reject is fed back to the model as feedback naming the code and field."""
    ledger = Ledger()
    _, crossing, model = run_one([offer_json(pct=90), offer_json(pct=20)], offer_boundary(ledger))
    assert crossing.committed and crossing.attempts == 2
    assert model.requests[0].feedback == ()
    feedback = model.requests[1].feedback
    assert len(feedback) == 1 and "policy.cap" in feedback[0] and "discount_pct" in feedback[0]
    assert "rejected" in model.requests[1].messages[-1].content
    assert ledger.calls == ["r1/1/offer"]


def test_reject_after_budget_is_never_reported_as_success() -> None:
    """When the retry budget runs out the crossing aborts: no commit, no effect, typed rejects."""
    ledger = Ledger()
    policy = RejectPolicy(max_attempts=2, exhausted=Abort("budget"))
    _, crossing, model = run_one([offer_json(pct=90)], offer_boundary(ledger, policy=policy))
    assert crossing.outcome == "aborted" and not crossing.committed
    assert crossing.value is None and crossing.effect_result is None
    assert [r.code for r in crossing.rejects] == ["policy.cap"]
    assert ledger.calls == [] and len(model.requests) == 2


def test_transport_errors_are_retried_with_backoff_and_never_fed_back() -> None:
    """A 5xx is journaled as a transport error, retried after a durable backoff, and the
    model never sees it as feedback."""
    ledger = Ledger()
    boundary = offer_boundary(ledger, transport=TransportPolicy(max_retries=2,
                                                                backoff=timedelta(minutes=5)))
    runtime, crossing, model = run_one([ServerError("503"), offer_json(pct=5)], boundary)
    assert crossing.committed and crossing.attempts == 2
    assert model.requests[1].feedback == ()
    attempts = asyncio.run(runtime.store.list_attempts("r1"))
    assert [a.kind for a in attempts] == ["transport_error", "proposal"]
    assert attempts[0].error_kind == "server"
    # The retry waited for the backoff on the (virtual) clock.
    assert attempts[1].at >= attempts[0].retry_at


def test_exhausted_transport_retries_fail_the_crossing() -> None:
    """A model that keeps failing ends the crossing as failed, with the transport reason."""
    boundary = offer_boundary(Ledger(), transport=TransportPolicy(max_retries=1))
    _, crossing, model = run_one([ServerError("down")], boundary)
    assert crossing.outcome == "failed" and "transport" in crossing.reason
    assert len(model.requests) == 2


def test_bytes_that_are_not_utf8_are_a_malformed_transport_error() -> None:
    """Undecodable output is a transport fault (malformed), not verifier feedback."""
    boundary = offer_boundary(Ledger(), transport=TransportPolicy(max_retries=0))
    runtime, crossing, _ = run_one([b"\xff\xfe{"], boundary)
    assert crossing.outcome == "failed"
    attempts = asyncio.run(runtime.store.list_attempts("r1"))
    assert attempts[0].error_kind == MalformedResponse.kind


def test_a_verifier_that_raises_fails_closed() -> None:
    """An exception inside a verifier is a non-retryable reject, never an accept."""
    from threshold import Boundary, Prompt, verifier

    @verifier("broken")
    def broken(offer: Offer, ctx: Any) -> Any:
        raise RuntimeError("bug")

    ledger = Ledger()
    boundary = Boundary("offer", output=Offer, prompt=Prompt("p", "1", "x {c}"),
                        verifiers=[broken], commit=ledger.commit)
    _, crossing, _ = run_one([offer_json()], boundary)
    assert crossing.outcome == "aborted" and crossing.rejects[0].code == "verifier.error"
    assert ledger.calls == []


async def _async_raises(offer: Offer, ctx: Any) -> Any:
    raise RuntimeError("bug")


async def _async_not_a_verdict(offer: Offer, ctx: Any) -> Any:
    return True


async def _async_reject(offer: Offer, ctx: Any) -> Any:
    from threshold import Reject
    return Reject("rule.async", "refused after an await")


@pytest.mark.parametrize(("check", "code"), [
    (lambda offer, ctx: True, "verifier.error"),  # a bool is not a verdict
    (_async_raises, "verifier.error"),
    (_async_not_a_verdict, "verifier.error"),
    (_async_reject, "rule.async"),
], ids=["sync-not-a-verdict", "async-raises", "async-not-a-verdict", "async-reject"])
def test_every_verifier_shape_ends_in_a_typed_verdict(check: Any, code: str) -> None:
    """Sync or async, a verifier that returns junk or raises is a reject; an async reject
    is kept with its own code. None of them commits."""
    from threshold import Boundary, Prompt, verifier

    ledger = Ledger()
    boundary = Boundary("offer", output=Offer, prompt=Prompt("p", "1", "x {c}"),
                        verifiers=[verifier("v")(check)], commit=ledger.commit,
                        on_reject=RejectPolicy(max_attempts=1, exhausted=Abort()))
    _, crossing, _ = run_one([offer_json()], boundary)
    assert crossing.outcome == "aborted" and [r.code for r in crossing.rejects] == [code]
    assert ledger.calls == []


def test_provenance_and_verdict_versions_are_recorded() -> None:
    """Every proposal records its provenance; every verdict its verifier name and version."""
    answer = Completion(offer_json(), served_model="served-x", system_fingerprint="fp1",
                        tokens_in=11, tokens_out=7, latency_ms=12.5)
    runtime, _, _ = run_one([answer], offer_boundary(Ledger()))
    attempt = asyncio.run(runtime.store.list_attempts("r1"))[0]
    prov = attempt.provenance or {}
    assert prov["model_id"] == "scripted:scripted" and prov["served_model"] == "served-x"
    assert prov["system_fingerprint"] == "fp1" and prov["prompt_id"] == "offer"
    assert prov["prompt_version"] == "1" and len(prov["prompt_hash"]) == 16
    assert prov["tokens_in"] == 11 and prov["latency_ms"] == 12.5
    assert {"seed", "sampling", "input_digest"} <= prov.keys()
    verdicts = asyncio.run(runtime.store.list_verdicts("r1"))
    assert {(v.verifier, v.verifier_version) for v in verdicts} == {("schema", "1"), ("cap", "2")}
    assert all(v.proposal_hash == attempt.proposal_hash for v in verdicts)


def test_escalation_suspends_until_a_human_approves() -> None:
    """A routed reject suspends the run durably; an authorized approval commits that proposal
    with a human verdict naming who decided."""
    ledger = Ledger()
    policy = RejectPolicy(routes={"policy.": Escalate(role="pricing")})
    runtime, model = scripted_runtime([offer_json(pct=45)])
    boundary = offer_boundary(ledger, policy=policy)

    @runtime.agent("one")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> Any:
        return (await ctx.cross(boundary, {"c": "x"})).to_json()

    async def go() -> None:
        await runtime.start("one", {}, run_id="r1")
        await runtime.run_until_idle()
        assert (await runtime.store.get_run("r1")).status == "waiting"  # type: ignore[union-attr]
        [approval] = await runtime.store.list_approvals(status="pending")
        with pytest.raises(UnauthorizedError):
            await runtime.decide(approval.approval_id, approve=True, principal="eve@intern")
        await runtime.decide(approval.approval_id, approve=True, principal="ann@pricing",
                             comment="strategic account")
        await runtime.run_until_idle()
        run = await runtime.store.get_run("r1")
        assert run is not None and run.status == "completed"
        assert run.result["outcome"] == "committed" and run.result["decided_by"] == "ann@pricing"
        human = [v for v in await runtime.store.list_verdicts("r1") if v.verifier == "human"]
        assert human[0].decided_by == "ann@pricing" and human[0].message == "strategic account"

    asyncio.run(go())
    assert ledger.calls == ["r1/1/offer"] and len(model.requests) == 1


def test_denied_escalation_commits_nothing() -> None:
    """A human denial ends the crossing as denied with no effect."""
    ledger = Ledger()
    runtime, _ = scripted_runtime([offer_json(pct=45)])
    boundary = offer_boundary(ledger, policy=RejectPolicy(routes={"policy.cap": Escalate(
        role="pricing")}))

    @runtime.agent("one")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> str:
        return (await ctx.cross(boundary, {"c": "x"})).outcome

    async def go() -> None:
        await runtime.start("one", {}, run_id="r1")
        await runtime.run_until_idle()
        [approval] = await runtime.store.list_approvals()
        await runtime.decide(approval.approval_id, approve=False, principal="ann@pricing")
        await runtime.run_until_idle()
        assert (await runtime.store.get_run("r1")).result == "denied"  # type: ignore[union-attr]

    asyncio.run(go())
    assert ledger.calls == []
