"""P1 hierarchical delegation: typed routing, a deterministic merge with recorded conflicts,
one retry budget owned by the parent, per-child timeouts with partial-result policies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from threshold import (
    Accept,
    Boundary,
    EffectContext,
    ModelRegistry,
    Prompt,
    Reject,
    RejectPolicy,
    RunContext,
    Runtime,
    SimModel,
    VerifyContext,
    VirtualClock,
    open_store,
    verifier,
)
from threshold.errors import ConfigError, UnroutableTaskError
from threshold.models import Completion, ErrorProfile, ModelRequest, ModelSpec
from threshold.patterns.delegation import (
    Delegation,
    Drop,
    FailFast,
    Orchestrator,
    PartialPolicy,
    RetryBudget,
    SubAgent,
    Substitute,
    describe_coordination,
)


# sub-tasks, proposals and the merged plan ---------------------------------------------
class PricingTask(BaseModel):
    customer: str
    tenure_months: int


class RetentionTask(BaseModel):
    customer: str
    churn_risk: float


class PricingProposal(BaseModel):
    discount_pct: int = Field(ge=0, le=100)
    term_months: int


class RetentionProposal(BaseModel):
    discount_pct: int | None = Field(default=None, ge=0, le=100)
    term_months: int | None = None
    channel: Literal["email", "phone", "letter"]


class RenewalPlan(BaseModel):
    discount_pct: int
    term_months: int
    channel: str | None = None


@verifier("discount_cap", version="1")
def cap(p: PricingProposal | RetentionProposal, ctx: VerifyContext) -> Accept | Reject:
    if (p.discount_pct or 0) > 30:
        return Reject("policy.discount_cap", f"{p.discount_pct}% is over 30%",
                      hint="stay at or under 30%")
    return Accept()


def pricing_boundary(max_attempts: int = 3) -> Boundary[PricingProposal]:
    return Boundary("pricing", output=PricingProposal, verifiers=[cap],
                    prompt=Prompt("pricing", "1", "Price {customer} ({tenure_months} months)."),
                    on_reject=RejectPolicy(max_attempts=max_attempts))


def retention_boundary(max_attempts: int = 3) -> Boundary[RetentionProposal]:
    return Boundary("retention", output=RetentionProposal, verifiers=[cap],
                    prompt=Prompt("retention", "1", "Keep {customer} (risk {churn_risk})."),
                    on_reject=RejectPolicy(max_attempts=max_attempts))


TASKS = [RetentionTask(customer="ada", churn_risk=0.7),
         PricingTask(customer="ada", tenure_months=30)]


def orchestrator(*, timeout: float = 5.0, retention_missing: PartialPolicy | None = None,
                 pricing_missing: PartialPolicy | None = None,
                 merge_into: type[BaseModel] = RenewalPlan, own_max: int = 3,
                 retention_max: int | None = None) -> Orchestrator[Any]:
    return Orchestrator(
        "renewal",
        merge_into=merge_into,
        subagents=[
            SubAgent("pricing", pricing_boundary(own_max), timeout=timeout,
                     on_missing=pricing_missing or Drop(), model="scripted:pricing"),
            SubAgent("retention", retention_boundary(retention_max or own_max), timeout=timeout,
                     on_missing=retention_missing or Drop(), model="scripted:retention"),
        ],
        routes={PricingTask: "pricing", RetentionTask: "retention"},
        priority=["pricing", "retention"],
        field_priority={"discount_pct": ["retention"]},
    )


# fakes: proposers with real latency ---------------------------------------------------
class Paced:
    """A scripted proposer answering ``text`` after ``delay`` seconds of real time."""

    def __init__(self, name: str, text: str, delay: float = 0.0,
                 finished: list[str] | None = None) -> None:
        self._spec = ModelSpec("scripted", name, "1")
        self.text, self.delay = text, delay
        self.finished = finished if finished is not None else []
        self.calls = 0

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    async def complete(self, request: ModelRequest) -> Completion:
        self.calls += 1
        await asyncio.sleep(self.delay)
        self.finished.append(self._spec.name)
        return Completion(text=self.text, served_model=self._spec.id, finish_reason="stop")


class CountingSim(SimModel):
    """The sim proposer, counting its calls."""

    calls = 0

    async def complete(self, request: ModelRequest) -> Completion:
        self.calls += 1
        return await super().complete(request)


Body = Callable[[RunContext], Awaitable[Any]]


def runtime(tmp_path: Path, models: dict[str, Any], body: Body, name: str = "runs") -> Runtime:
    registry = ModelRegistry()
    for spec, model in models.items():
        registry.add(f"scripted:{spec}", model)
    rt = Runtime(open_store(f"sqlite:///{tmp_path / name}.db"), clock=VirtualClock(),
                 models=registry)

    @rt.agent("orchestrator")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> Any:
        return await body(ctx)

    return rt


async def run_one(rt: Runtime, run_id: str = "r1") -> Any:
    await rt.start("orchestrator", {}, run_id=run_id)
    await rt.run_until_idle()
    return await rt.store.get_run(run_id)


def summary(d: Delegation[Any]) -> dict[str, Any]:
    return {"value": d.value.model_dump(), "attempts": d.attempts,
            "children": {c.child: [c.status, c.use, c.attempts] for c in d.children},
            "conflicts": [c.to_json() for c in d.conflicts]}


PRICING = '{"discount_pct": 10, "term_months": 24}'
RETENTION = '{"discount_pct": 25, "term_months": 12, "channel": "phone"}'


# tests ----------------------------------------------------------------------------------
def test_disagreement_is_merged_by_priority_whatever_finished_first(tmp_path: Path) -> None:
    """Pricing and retention disagree on discount and term; the merge follows the declared
    priorities (field override for discount), identically whichever child finished first,
    and each conflict is journaled with both values and the winner."""
    outcomes = []
    for slow in ("pricing", "retention"):
        finished: list[str] = []
        models = {"pricing": Paced("pricing", PRICING, 0.2 if slow == "pricing" else 0.0,
                                   finished),
                  "retention": Paced("retention", RETENTION,
                                     0.2 if slow == "retention" else 0.0, finished)}
        plan = orchestrator()

        async def body(ctx: RunContext, plan: Orchestrator[Any] = plan) -> Any:
            delegated = await plan.delegate(ctx, TASKS, budget=RetryBudget(6))
            # Only the orchestrator commits: one effect with the merged plan.
            await ctx.effect("apply_plan", _record(delegated.value))
            return summary(delegated)

        rt = runtime(tmp_path, models, body, name=f"slow-{slow}")

        async def scenario(rt: Runtime = rt) -> tuple[Any, list[Any]]:
            run = await run_one(rt)
            events = await rt.store.list_events("r1", kind="delegation.conflict")
            return run, [e.data for e in events]

        run, conflicts = asyncio.run(scenario())
        assert run.status == "completed", run
        assert finished[0] != slow  # the other child really finished first
        outcomes.append((run.result, conflicts))

    assert outcomes[0] == outcomes[1]
    result, conflicts = outcomes[0]
    assert result["value"] == {"discount_pct": 25, "term_months": 24, "channel": "phone"}
    assert conflicts == [
        {"orchestrator": "renewal", "field": "discount_pct",
         "values": [["retention", 25], ["pricing", 10]], "winner": "retention",
         "rule": "field_priority[discount_pct]"},
        {"orchestrator": "renewal", "field": "term_months",
         "values": [["pricing", 24], ["retention", 12]], "winner": "pricing",
         "rule": "priority"}]


def _record(plan: BaseModel) -> Callable[[EffectContext], Awaitable[Any]]:
    async def apply(e: EffectContext) -> Any:
        return {"key": e.key, "plan": plan.model_dump()}

    return apply


def test_parent_budget_caps_attempts_across_children_and_dispatches(tmp_path: Path) -> None:
    """Budget 6 over three children: shares 2/2/2, a child allowing itself 10 attempts uses
    only its share, a stricter child (1) keeps its own cap; a second dispatch gets what is
    left (1). The store holds exactly 6 proposal attempts."""
    over = '{"discount_pct": 90, "term_months": 12, "channel": "email"}'
    models = {"pricing": Paced("pricing", '{"discount_pct": 90, "term_months": 12}'),
              "retention": Paced("retention", over)}

    class Draft(BaseModel):
        discount_pct: int | None = None
        term_months: int | None = None
        channel: str | None = None

    plan = orchestrator(merge_into=Draft, own_max=10, retention_max=1)
    tasks = [PricingTask(customer="a", tenure_months=1), TASKS[0],
             PricingTask(customer="b", tenure_months=2)]

    async def body(ctx: RunContext) -> Any:
        budget = RetryBudget(6)
        first = await plan.delegate(ctx, tasks, budget=budget)
        second = await plan.delegate(ctx, tasks, budget=budget)
        return {"first": summary(first)["children"], "second": summary(second)["children"],
                "spent": budget.spent, "remaining": budget.remaining}

    rt = runtime(tmp_path, models, body)

    async def scenario() -> None:
        run = await run_one(rt)
        assert run is not None and run.status == "completed", run
        assert run.result["first"] == {"pricing": ["rejected", "dropped", 2],
                                       "pricing#2": ["rejected", "dropped", 2],
                                       "retention": ["rejected", "dropped", 1]}
        assert run.result["second"] == {"pricing": ["rejected", "dropped", 1],
                                        "pricing#2": ["budget_exhausted", "dropped", 0],
                                        "retention": ["budget_exhausted", "dropped", 0]}
        assert (run.result["spent"], run.result["remaining"]) == (6, 0)
        attempts = await rt.store.list_attempts("r1")
        assert len(attempts) == 6 == models["pricing"].calls + models["retention"].calls
        dispatches = await rt.store.list_events("r1", kind="delegation.dispatch")
        assert [[c["share"] for c in d.data["children"]] for d in dispatches] == [[2, 2, 2],
                                                                                 [1, 0, 0]]

    asyncio.run(scenario())


def slow_retention(delay_ms: float) -> CountingSim:
    def propose(rng: Any, request: ModelRequest) -> RetentionProposal:
        return RetentionProposal(discount_pct=20, channel="phone")

    return CountingSim("v1", profile=ErrorProfile(), latency_ms=(delay_ms, delay_ms),
                       sleep=asyncio.sleep, generators={RetentionProposal: propose})


@pytest.mark.parametrize("policy", ["drop", "substitute", "fail"])
def test_child_timeout_applies_its_partial_result_policy(tmp_path: Path, policy: str) -> None:
    """Retention (400 ms of real model latency) misses its 100 ms timeout: it is journaled
    as timed out and dropped, substituted by its declared default, or fails the delegation;
    a resumed run takes the same branch without calling the slow model again."""
    missing: PartialPolicy = {"drop": Drop(), "fail": FailFast(),
                              "substitute": Substitute({"channel": "letter"})}[policy]
    sim = slow_retention(400)
    models = {"pricing": Paced("pricing", PRICING), "retention": sim}
    plan = orchestrator(timeout=0.1, retention_missing=missing)

    async def body(ctx: RunContext) -> Any:
        delegated = await plan.delegate(ctx, TASKS, budget=RetryBudget(4))
        await ctx.sleep(timedelta(days=1))  # the run suspends and re-executes from the top
        return summary(delegated)

    rt = runtime(tmp_path, models, body)

    async def scenario() -> None:
        run = await run_one(rt)
        assert run is not None
        assert sim.calls == 1
        (child,) = [e.data for e in await rt.store.list_events("r1", kind="delegation.child")
                    if e.data["child"] == "retention"]
        assert child["status"] == "timed_out" and child["attempts"] == 1
        assert child["reason"].startswith("timeout: no answer within 0.1 s")
        if policy == "fail":
            assert run.status == "failed" and "DelegationFailed" in (run.error or "")
            (failed,) = await rt.store.list_events("r1", kind="delegation.failed")
            assert failed.data["child"] == "retention"
            return
        assert run.status == "completed", run
        assert run.result["children"]["retention"] == [
            "timed_out", "dropped" if policy == "drop" else "substituted", 1]
        channel = None if policy == "drop" else "letter"
        assert run.result["value"] == {"discount_pct": 10, "term_months": 24,
                                       "channel": channel}
        (crossing,) = [c for c in await rt.store.list_crossings("r1")
                       if c.boundary == "retention"]
        assert crossing.status == "failed" and (crossing.reason or "").startswith("timeout:")

    asyncio.run(scenario())


def test_fail_fast_child_cancels_its_slow_sibling(tmp_path: Path) -> None:
    """A fail-fast child that is rejected ends the delegation at once: the 30 s sibling is
    cancelled and recorded as such, and the run fails with DelegationFailed."""
    models = {"pricing": Paced("pricing", "not json at all"),
              "retention": Paced("retention", RETENTION, delay=30.0)}
    plan = orchestrator(pricing_missing=FailFast(), own_max=1, timeout=60)

    async def body(ctx: RunContext) -> Any:
        return summary(await plan.delegate(ctx, TASKS, budget=RetryBudget(4)))

    rt = runtime(tmp_path, models, body)

    async def scenario() -> None:
        began = time.perf_counter()
        run = await run_one(rt)
        assert time.perf_counter() - began < 10
        assert run is not None and run.status == "failed"
        assert "child pricing" in (run.error or "")
        children = {e.data["child"]: e.data for e in
                    await rt.store.list_events("r1", kind="delegation.child")}
        assert children["pricing"]["status"] == "rejected"
        assert children["pricing"]["rejects"] == ["schema.not_json"]
        assert children["retention"]["status"] == "cancelled"

    asyncio.run(scenario())


def test_unroutable_task_is_a_typed_error_before_anything_runs(tmp_path: Path) -> None:
    """A sub-task type missing from the routing table raises UnroutableTaskError and no
    crossing or journal event is written."""
    class LegalReview(BaseModel):
        clause: str

    plan = orchestrator()
    with pytest.raises(UnroutableTaskError, match="LegalReview"):
        plan.route(LegalReview(clause="7.2"))

    async def body(ctx: RunContext) -> Any:
        return summary(await plan.delegate(ctx, [*TASKS, LegalReview(clause="7.2")],
                                           budget=RetryBudget(4)))

    rt = runtime(tmp_path, {"pricing": Paced("pricing", PRICING),
                            "retention": Paced("retention", RETENTION)}, body)

    async def scenario() -> None:
        run = await run_one(rt)
        assert run is not None and run.status == "failed"
        assert "UnroutableTaskError" in (run.error or "")
        assert await rt.store.list_crossings("r1") == []
        assert [e.kind for e in await rt.store.list_events("r1")] == ["run.error"]

    asyncio.run(scenario())


async def _send(p: PricingProposal, e: EffectContext) -> None:
    return None


def test_orchestrator_refuses_bad_declarations() -> None:
    """Sub-agents must not commit, must all be ranked, and substitutes must fit the type."""
    committing = Boundary("pricing", output=PricingProposal, prompt=Prompt("p", "1", "x"),
                          commit=_send)
    with pytest.raises(ConfigError, match="only the orchestrator commits"):
        SubAgent("pricing", committing)
    with pytest.raises(ConfigError, match="substitute does not fit"):
        SubAgent("retention", retention_boundary(), on_missing=Substitute({"channel": "fax"}))
    with pytest.raises(ConfigError, match="rank every sub-agent"):
        Orchestrator("o", merge_into=RenewalPlan,
                     subagents=[SubAgent("pricing", pricing_boundary()),
                                SubAgent("retention", retention_boundary())],
                     routes={PricingTask: "pricing"}, priority=["pricing"])


def test_describe_coordination_renders_the_delegation(tmp_path: Path) -> None:
    """Dispatch, children, conflicts and the merge render as readable lines."""
    models = {"pricing": Paced("pricing", PRICING), "retention": Paced("retention", RETENTION)}
    plan = orchestrator()

    async def body(ctx: RunContext) -> Any:
        return summary(await plan.delegate(ctx, TASKS, budget=RetryBudget(6)))

    rt = runtime(tmp_path, models, body)

    async def scenario() -> list[str]:
        await run_one(rt)
        return describe_coordination(await rt.store.list_events("r1"))

    lines = asyncio.run(scenario())
    assert "renewal: dispatch 2 sub-task(s), budget 6/6 left: pricing<-PricingTask share=3 " \
           "timeout=5s on_missing=drop, retention<-RetentionTask share=3" in lines[0]
    assert "renewal/pricing: ok after 1 attempt of 3 -> merged" in lines[1]
    assert "renewal: conflict on discount_pct: retention=25, pricing=10 -> retention wins by " \
           "field_priority[discount_pct]" in lines[3]
    assert "renewal: merged {'discount_pct': 25, 'term_months': 24, 'channel': 'phone'} " \
           "(2 attempts, budget left 4)" in lines[5]
