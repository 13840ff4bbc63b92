"""diagnose: failure signatures read from real journals (real runtime, real SQLite files),
each mapped to its pattern weakness, ranked by earliest symptom; a clean run has none."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from helpers import Ledger, offer_boundary, offer_json, scripted_runtime
from threshold import (
    Boundary,
    Escalate,
    Prompt,
    RejectPolicy,
    RunContext,
    Runtime,
    VirtualClock,
    open_store,
)
from threshold.cli import main
from threshold.clock import DEFAULT_EPOCH, to_iso
from threshold.effects import EffectContext
from threshold.errors import CrashInjected, StaleWriteError
from threshold.methodology import SIGNATURES, Diagnosis, Finding, diagnose
from threshold.models import ModelRegistry, ScriptedModel
from threshold.patterns.delegation import Orchestrator, RetryBudget, SubAgent
from threshold.patterns.saga import CompensationRetry, Saga
from threshold.patterns.state_machine import StateMachine
from threshold.patterns.topics import Consumer, Delivery, LatenessPolicy, Topic
from threshold.testing import CrashPlan

ONE_SHOT = RejectPolicy(max_attempts=1)


def url_in(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'journal.db'}"


async def diagnosed(url: str, run_id: str | None = None) -> Diagnosis:
    store = open_store(url)
    try:
        return await diagnose(store, run_id=run_id)
    finally:
        await store.close()


def only(result: Diagnosis, signature: str) -> Finding:
    found = result.by_signature(signature)
    assert len(found) == 1, [f.signature for f in result.findings]
    return found[0]


async def run_all(rt: Runtime) -> None:
    await rt.run_until_idle()
    await rt.store.close()


# --- clean ---------------------------------------------------------------------------------


def test_a_clean_run_yields_no_findings(tmp_path: Path) -> None:
    """A run that commits, escalates a breach to a person who decides in half an hour, sleeps
    on an on-time timer and sends one effect has no failure signature."""
    url = url_in(tmp_path)
    ledger = Ledger()
    human = RejectPolicy(routes={"policy.": Escalate(role="manager")})

    async def scenario() -> None:
        rt, _ = scripted_runtime([offer_json(pct=10), offer_json(pct=45)], url)
        plain, gated = offer_boundary(ledger), offer_boundary(ledger, policy=human)

        @rt.agent("clean")
        async def clean(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
            first = await ctx.cross(plain, {"c": "ada"})
            second = await ctx.cross(gated, {"c": "bob"})
            await ctx.sleep(timedelta(days=1), purpose="follow_up")
            return {"first": first.to_json(), "second": second.to_json()}

        await rt.start("clean", {}, run_id="r1")
        await rt.run_until_idle()
        assert isinstance(rt.clock, VirtualClock)
        rt.clock.advance(minutes=30)
        (approval,) = await rt.store.list_approvals(status="pending")
        await rt.decide(approval.approval_id, approve=True, principal="mia@manager")
        await run_all(rt)

    asyncio.run(scenario())
    result = asyncio.run(diagnosed(url))
    assert ledger.calls == ["r1/1/offer", "r1/2/offer"]
    assert result.clean, result.render_text()
    assert result.runs == 1 and result.crossings == 2
    assert main(["diagnose", "--db", url]) == 0


# --- the boundary ------------------------------------------------------------------------


def test_a_reject_reported_as_success_is_found(tmp_path: Path) -> None:
    """An agent that reports an aborted crossing as committed and sends its action anyway is
    found as reject-reported-as-success, an SDB weakness, with the run and crossing named."""
    url = url_in(tmp_path)

    async def scenario() -> None:
        rt, _ = scripted_runtime([offer_json(pct=50)], url)
        boundary = offer_boundary(policy=ONE_SHOT)

        @rt.agent("careless")
        async def careless(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
            crossing = await ctx.cross(boundary, {"c": "ada"})

            async def send(effect: EffectContext) -> str:
                return "sent"

            await ctx.effect("offer", send)  # the boundary refused; this sends anyway
            return {"status": "sent", "offer": {"crossing_id": crossing.crossing_id,
                                                "outcome": "committed"}}

        await rt.start("careless", {}, run_id="r1")
        await run_all(rt)

    asyncio.run(scenario())
    finding = only(asyncio.run(diagnosed(url)), "reject_reported_as_success")
    assert finding.pattern == "SDB" and finding.severity == "high"
    assert finding.run_ids == ("r1",) and finding.crossing_ids == ("r1/1",)
    assert finding.count == 3  # the forged outcome, the success claim, the effect sent
    assert any("effect offer" in line for line in finding.evidence)


def test_a_retry_loop_and_an_exhausted_budget_are_found(tmp_path: Path) -> None:
    """A model that repeats the same out-of-policy proposal burns three attempts: a retry
    loop without progress and an exhausted retry budget, both SDB weaknesses."""
    url = url_in(tmp_path)

    async def scenario() -> None:
        rt, model = scripted_runtime([offer_json(pct=50)], url)
        boundary = offer_boundary()

        @rt.agent("stubborn")
        async def stubborn(ctx: RunContext, inp: dict[str, Any]) -> str:
            return (await ctx.cross(boundary, {"c": "ada"})).outcome

        await rt.start("stubborn", {}, run_id="r1")
        await run_all(rt)
        assert len(model.requests) == 3

    asyncio.run(scenario())
    result = asyncio.run(diagnosed(url))
    loop = only(result, "retry_loop")
    assert (loop.pattern, loop.subject, loop.crossing_ids) == ("SDB", "offer", ("r1/1",))
    assert "3 consecutive attempts proposed the same thing" in loop.evidence[0]
    budget = only(result, "budget_exhausted")
    assert (budget.pattern, budget.count) == ("SDB", 1)


def test_an_effect_interrupted_in_the_crash_window_is_found(tmp_path: Path) -> None:
    """A crash after the effect ran and before its result was recorded, resumed an hour
    later: the effect really runs twice, and diagnose reports a duplicate effect attempt."""
    url = url_in(tmp_path)
    ledger = Ledger()

    def runtime(clock: VirtualClock, crash: CrashPlan | None) -> Runtime:
        models = ModelRegistry()
        models.add("scripted", ScriptedModel([offer_json(pct=10)]))
        rt = Runtime(open_store(url), clock=clock, models=models, default_model="scripted",
                     crash_hook=crash)
        boundary = offer_boundary(ledger)

        @rt.agent("send")
        async def send(ctx: RunContext, inp: dict[str, Any]) -> str:
            return (await ctx.cross(boundary, {"c": "ada"})).outcome

        return rt

    async def crashing() -> None:
        rt = runtime(VirtualClock(), CrashPlan("after_effect", mode="raise"))
        await rt.start("send", {}, run_id="r1")
        with pytest.raises(BaseExceptionGroup) as crashed:
            await rt.run_until_idle()
        assert crashed.group_contains(CrashInjected)
        await rt.store.close()

    async def restarted() -> None:
        await run_all(runtime(VirtualClock(DEFAULT_EPOCH + timedelta(hours=1)), None))

    asyncio.run(crashing())
    asyncio.run(restarted())
    assert ledger.calls == ["r1/1/offer", "r1/1/offer"]
    finding = only(asyncio.run(diagnosed(url)), "duplicate_effect")
    assert (finding.pattern, finding.crossing_ids) == ("SDB", ("r1/1",))
    # The resumed commit is told it may be a repeat, so the journal counts both sends.
    assert "performed 2 times" in finding.evidence[0]


def test_a_commit_without_an_accept_is_found(tmp_path: Path) -> None:
    """A journal row altered after the fact (the verifier's accept turned into a reject)
    leaves a commit without its accept: found through the audit, as an SDB weakness."""
    url = url_in(tmp_path)

    async def scenario() -> None:
        rt, _ = scripted_runtime([offer_json(pct=10)], url)
        boundary = offer_boundary(Ledger())

        @rt.agent("ok")
        async def ok(ctx: RunContext, inp: dict[str, Any]) -> str:
            return (await ctx.cross(boundary, {"c": "ada"})).outcome

        await rt.start("ok", {}, run_id="r1")
        await run_all(rt)

    asyncio.run(scenario())
    assert asyncio.run(diagnosed(url)).clean
    with sqlite3.connect(tmp_path / "journal.db") as db:
        db.execute("UPDATE verdicts SET verdict='reject', code='policy.cap' "
                   "WHERE verifier='cap'")
    finding = only(asyncio.run(diagnosed(url)), "commit_without_accept")
    assert (finding.pattern, finding.crossing_ids) == ("SDB", ("r1/1",))
    assert "without accepts from ['cap']" in finding.evidence[0]


# --- P4 and P6: gates and humans ---------------------------------------------------------


def test_a_gate_bottleneck_is_found(tmp_path: Path) -> None:
    """Twelve runs whose proposals all breach the discount policy: most crossings stop at a
    gate, which is reported as a P4 bottleneck with the counts per code."""
    url = url_in(tmp_path)

    async def scenario() -> None:
        rt, _ = scripted_runtime([offer_json(pct=50)], url)
        boundary = offer_boundary(policy=ONE_SHOT)

        @rt.agent("offers")
        async def offers(ctx: RunContext, inp: dict[str, Any]) -> str:
            return (await ctx.cross(boundary, {"c": inp["c"]})).outcome

        for n in range(12):
            await rt.start("offers", {"c": f"c{n}"}, run_id=f"r{n:02d}")
        await run_all(rt)

    asyncio.run(scenario())
    finding = only(asyncio.run(diagnosed(url)), "gate_bottleneck")
    assert finding.pattern == "P4" and finding.subject == "policy.cap"
    assert finding.counts == {"policy.cap": 12} and len(finding.run_ids) == 12


def test_an_approval_timeout_is_found(tmp_path: Path) -> None:
    """An escalation nobody decides within its one-hour SLA is denied by the fallback: a P6
    approval timeout, first seen when the SLA lapsed."""
    url = url_in(tmp_path)
    policy = RejectPolicy(routes={"policy.": Escalate(role="manager", sla=timedelta(hours=1))})

    async def scenario() -> None:
        rt, _ = scripted_runtime([offer_json(pct=45)], url)
        boundary = offer_boundary(policy=policy)

        @rt.agent("waits")
        async def waits(ctx: RunContext, inp: dict[str, Any]) -> str:
            return (await ctx.cross(boundary, {"c": "ada"})).outcome

        await rt.start("waits", {}, run_id="r1")
        await run_all(rt)

    asyncio.run(scenario())
    finding = only(asyncio.run(diagnosed(url)), "approval_timeout")
    assert (finding.pattern, finding.subject, finding.run_ids) == ("P6", "manager", ("r1",))
    assert finding.first_seen == to_iso(DEFAULT_EPOCH + timedelta(hours=1))
    assert "timed_out by the SLA fallback" in finding.evidence[0]


def test_a_rubber_stamp_approver_is_found(tmp_path: Path) -> None:
    """A principal who approves every one of twelve escalations five seconds after each was
    raised is reported as a P6 rubber stamp, with the counts that make it one."""
    url = url_in(tmp_path)
    policy = RejectPolicy(routes={"policy.": Escalate(role="manager")})

    async def scenario() -> None:
        rt, _ = scripted_runtime([offer_json(pct=45)], url)
        boundary = offer_boundary(Ledger(), policy=policy)

        @rt.agent("asks")
        async def asks(ctx: RunContext, inp: dict[str, Any]) -> str:
            return (await ctx.cross(boundary, {"c": inp["c"]})).outcome

        for n in range(12):
            await rt.start("asks", {"c": f"c{n}"}, run_id=f"r{n:02d}")
        await rt.run_until_idle()
        assert isinstance(rt.clock, VirtualClock)
        rt.clock.advance(seconds=5)
        for approval in await rt.store.list_approvals(status="pending"):
            await rt.decide(approval.approval_id, approve=True, principal="sam@manager")
        await run_all(rt)

    asyncio.run(scenario())
    finding = only(asyncio.run(diagnosed(url)), "rubber_stamp")
    assert (finding.pattern, finding.subject) == ("P6", "sam@manager")
    assert finding.counts == {"decisions": 12, "approved": 12, "median_latency_s": 5}


def test_a_backlog_of_pending_approvals_is_found(tmp_path: Path) -> None:
    """Twenty escalations waiting for a role nobody works: a P6 approval backlog."""
    url = url_in(tmp_path)
    policy = RejectPolicy(routes={"policy.": Escalate(role="counsel")})

    async def scenario() -> None:
        rt, _ = scripted_runtime([offer_json(pct=45)], url)
        boundary = offer_boundary(policy=policy)

        @rt.agent("asks")
        async def asks(ctx: RunContext, inp: dict[str, Any]) -> str:
            return (await ctx.cross(boundary, {"c": inp["c"]})).outcome

        for n in range(20):
            await rt.start("asks", {"c": f"c{n}"}, run_id=f"r{n:02d}")
        await run_all(rt)

    asyncio.run(scenario())
    finding = only(asyncio.run(diagnosed(url)), "approval_backlog")
    assert finding.pattern == "P6" and finding.counts == {"counsel": 20}


# --- P5 and P4: state rows and timers ----------------------------------------------------


class Oversleeping(VirtualClock):
    """A host that was suspended: it wakes two hours after the time it asked for."""

    async def sleep_until(self, when: datetime) -> None:
        await super().sleep_until(when + timedelta(hours=2))


def test_lapsed_and_late_timers_are_found(tmp_path: Path) -> None:
    """A guarded reminder whose row another run moved lapses (P5), and a timer on a host that
    overslept fires two hours late (P4)."""
    url = url_in(tmp_path)

    async def lapsing() -> None:
        rt, _ = scripted_runtime([], url)
        await rt.store.cas_record("contract", "c1", expected_version=0, value={"s": "open"},
                                  now=to_iso(rt.clock.now()))

        async def version() -> int:
            row = await rt.store.get_record("contract", "c1")
            return 0 if row is None else row.version

        async def move() -> None:
            await rt.store.cas_record("contract", "c1", expected_version=await version(),
                                      value={"s": "renewed"}, now=to_iso(rt.clock.now()))

        @rt.agent("reminder")
        async def reminder(ctx: RunContext, inp: dict[str, Any]) -> str:
            seen = await ctx.step("read", version)
            return await ctx.sleep(timedelta(hours=1), purpose="reminder",
                                   guard=("contract/c1", seen))

        @rt.agent("mover")
        async def mover(ctx: RunContext, inp: dict[str, Any]) -> None:
            await ctx.sleep(timedelta(minutes=10), purpose="pause")
            await ctx.step("move", move)

        await rt.start("reminder", {}, run_id="reminder")
        await rt.start("mover", {}, run_id="mover")
        await run_all(rt)

    async def oversleeping() -> None:
        rt = Runtime(open_store(url), clock=Oversleeping(DEFAULT_EPOCH + timedelta(days=1)))

        @rt.agent("nap")
        async def nap(ctx: RunContext, inp: dict[str, Any]) -> str:
            return await ctx.sleep(timedelta(minutes=15), purpose="nap")

        await rt.start("nap", {}, run_id="napper")
        await run_all(rt)

    asyncio.run(lapsing())
    asyncio.run(oversleeping())
    result = asyncio.run(diagnosed(url))
    lapsed = only(result, "lapsed_timer")
    assert (lapsed.pattern, lapsed.subject, lapsed.run_ids) == ("P5", "reminder",
                                                                ("reminder",))
    late = only(result, "late_timer")
    assert (late.pattern, late.run_ids) == ("P4", ("napper",))
    assert "fired 120 min late" in late.evidence[0]


def test_a_stale_compare_and_swap_is_found(tmp_path: Path) -> None:
    """A run applies a transition at the version it read before a wait, after another run
    moved the row: the state machine journals the lost compare-and-swap, the run fails with
    StaleWriteError, and diagnose reports one P5 stale write."""
    url = url_in(tmp_path)
    machine = StateMachine("renewal", states=["open", "offered", "closed"],
                           transitions={"open": {"offered", "closed"}, "offered": {"closed"}},
                           initial="open", terminal={"closed"})

    async def scenario() -> None:
        rt = Runtime(open_store(url), clock=VirtualClock())

        @rt.agent("slow")
        async def slow(ctx: RunContext, inp: dict[str, Any]) -> None:
            row = await machine.read(ctx, "c1")
            await ctx.sleep(timedelta(hours=1), purpose="think")
            await machine.apply(ctx, "c1", row.version, "offered")

        @rt.agent("fast")
        async def fast(ctx: RunContext, inp: dict[str, Any]) -> None:
            await ctx.sleep(timedelta(minutes=10), purpose="pause")
            await machine.transition_with_retry(ctx, "c1", "closed")

        await rt.start("slow", {}, run_id="slow")
        await rt.start("fast", {}, run_id="fast")
        await run_all(rt)

    asyncio.run(scenario())
    finding = only(asyncio.run(diagnosed(url)), "stale_cas_write")
    assert (finding.pattern, finding.run_ids, finding.count) == ("P5", ("slow",), 1)
    assert "state.stale_write" in finding.evidence[0] and "actual=1" in finding.evidence[0]


def test_a_run_failing_its_own_compare_and_swap_is_found(tmp_path: Path) -> None:
    """Code that does its own CAS on a record and raises StaleWriteError when it loses is
    found too, from the run's failure event."""
    url = url_in(tmp_path)

    async def scenario() -> None:
        rt = Runtime(open_store(url), clock=VirtualClock())
        store = rt.store
        await store.cas_record("contract", "c1", expected_version=0, value={"s": "open"},
                               now=to_iso(rt.clock.now()))

        async def read() -> int:
            row = await store.get_record("contract", "c1")
            return 0 if row is None else row.version

        async def write(expected: int, state: str) -> bool:
            return await store.cas_record("contract", "c1", expected_version=expected,
                                          value={"s": state},
                                          now=to_iso(rt.clock.now())) is not None

        @rt.agent("slow")
        async def slow(ctx: RunContext, inp: dict[str, Any]) -> None:
            seen = await ctx.step("read", read)
            await ctx.sleep(timedelta(hours=1), purpose="think")
            if not await ctx.step("write", write, seen, "renewed"):
                raise StaleWriteError("contract/c1", seen, await read())

        @rt.agent("fast")
        async def fast(ctx: RunContext, inp: dict[str, Any]) -> None:
            await ctx.sleep(timedelta(minutes=30), purpose="queue")  # after slow's read
            await ctx.step("write", write, await ctx.step("read", read), "churned")

        await rt.start("slow", {}, run_id="slow")
        await rt.start("fast", {}, run_id="fast")
        await run_all(rt)

    asyncio.run(scenario())
    finding = only(asyncio.run(diagnosed(url)), "stale_cas_write")
    assert (finding.pattern, finding.run_ids) == ("P5", ("slow",))
    assert "expected version 1, found 2" in finding.evidence[0]


# --- P2: sagas -----------------------------------------------------------------------------


def test_a_failed_saga_compensation_is_found(tmp_path: Path) -> None:
    """A saga whose compensation keeps failing escalates it (the saga module's own events):
    a P2 compensation failure naming the step."""
    url = url_in(tmp_path)

    async def reserve(effect: EffectContext) -> str:
        return "held"

    async def release(result: Any, effect: EffectContext) -> None:
        raise RuntimeError("inventory service refused the release")

    async def scenario() -> None:
        rt = Runtime(open_store(url), clock=VirtualClock())

        @rt.agent("booking")
        async def booking(ctx: RunContext, inp: dict[str, Any]) -> None:
            async with Saga(ctx, "booking", retry=CompensationRetry(max_attempts=2)) as saga:
                await saga.step("reserve", reserve, compensate=release)
                await saga.abort("the customer declined")

        await rt.start("booking", {}, run_id="r1")
        await run_all(rt)

    asyncio.run(scenario())
    result = asyncio.run(diagnosed(url))
    finding = only(result, "compensation_failed")
    assert (finding.pattern, finding.run_ids) == ("P2", ("r1",))
    assert "compensation of reserve failed 2 times" in finding.evidence[0]
    # Two attempts of one compensation reached the service with the same key.
    retried = only(result, "duplicate_effect")
    assert retried.pattern == "P2" and "performed 2 times" in retried.evidence[0]


def test_compensations_out_of_order_are_found(tmp_path: Path) -> None:
    """A hand-rolled saga that journals the saga module's events but undoes its oldest step
    first is reported as a P2 out-of-order compensation (the saga module itself cannot)."""
    url = url_in(tmp_path)

    async def scenario() -> None:
        rt = Runtime(open_store(url), clock=VirtualClock())

        @rt.agent("manual")
        async def manual(ctx: RunContext, inp: dict[str, Any]) -> None:
            for index, step in enumerate(("reserve", "charge"), 1):
                await ctx.event("saga.step", saga="order", step=step, index=index,
                                key=f"r1/saga:order/{step}", status="done", error=None)
            await ctx.event("saga.aborted", saga="order", reason="declined", step=None,
                            compensate=["charge", "reserve"])
            for attempt, step in enumerate(("reserve", "charge"), 1):
                await ctx.event("saga.compensate", saga="order", step=step,
                                key=f"r1/saga:order/{step}/compensate", attempt=attempt,
                                status="ok")
            await ctx.event("saga.compensated", saga="order", steps=["reserve", "charge"])

        await rt.start("manual", {}, run_id="r1")
        await run_all(rt)

    asyncio.run(scenario())
    finding = only(asyncio.run(diagnosed(url)), "compensation_out_of_order")
    assert finding.pattern == "P2"
    assert "compensated reserve before charge" in finding.evidence[0]


# --- P1: delegation ------------------------------------------------------------------------


class PricingTask(BaseModel):
    customer: str


class RetentionTask(BaseModel):
    customer: str


class Proposal(BaseModel):
    discount_pct: int = Field(ge=0, le=100)
    term_months: int


class Plan(BaseModel):
    discount_pct: int
    term_months: int


def test_conflicting_subagent_output_is_found(tmp_path: Path) -> None:
    """Two sub-agents propose different discounts; the merge arbitrates by priority and the
    delegation module journals the conflict: a P1 sub-agent conflict on that field."""
    url = url_in(tmp_path)

    def child(name: str) -> SubAgent[Proposal]:
        return SubAgent(name, Boundary(name, output=Proposal, verifiers=[],
                                       prompt=Prompt(name, "1", "Plan for {customer}.")),
                        model=f"scripted:{name}")

    async def scenario() -> None:
        models = ModelRegistry()
        models.add("scripted:pricing", ScriptedModel(
            ['{"discount_pct": 10, "term_months": 24}'], name="pricing"))
        models.add("scripted:retention", ScriptedModel(
            ['{"discount_pct": 25, "term_months": 24}'], name="retention"))
        rt = Runtime(open_store(url), clock=VirtualClock(), models=models)
        plan = Orchestrator("renewal", merge_into=Plan,
                            subagents=[child("pricing"), child("retention")],
                            routes={PricingTask: "pricing", RetentionTask: "retention"},
                            priority=["pricing", "retention"])

        @rt.agent("orchestrator")
        async def orchestrate(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
            merged = await plan.delegate(ctx, [PricingTask(customer="ada"),
                                               RetentionTask(customer="ada")],
                                         budget=RetryBudget(4))
            return merged.value.model_dump()

        await rt.start("orchestrator", {}, run_id="r1")
        await run_all(rt)

    asyncio.run(scenario())
    finding = only(asyncio.run(diagnosed(url)), "subagent_conflict")
    assert (finding.pattern, finding.counts) == ("P1", {"discount_pct": 1})
    assert "children disagree on discount_pct" in finding.evidence[0]


# --- P3: replay divergence and late events -------------------------------------------------


def test_replay_divergence_is_found(tmp_path: Path) -> None:
    """Agent code changed under an in-flight run (same version, a different first step): the
    resumed run fails with NondeterminismError, reported as P3 replay divergence."""
    url = url_in(tmp_path)

    def deployed(first_step: str) -> Runtime:
        rt = Runtime(open_store(url), clock=VirtualClock())

        @rt.agent("flow")
        async def flow(ctx: RunContext, inp: dict[str, Any]) -> Any:
            await ctx.step(first_step, lambda: 1)
            return await ctx.receive("go")

        return rt

    async def before() -> None:
        rt = deployed("load")
        await rt.start("flow", {}, run_id="r1")
        await run_all(rt)

    async def after() -> None:
        rt = deployed("fetch")
        await rt.deliver("r1", "go", "m1", {"ok": True})
        await run_all(rt)

    asyncio.run(before())
    asyncio.run(after())
    finding = only(asyncio.run(diagnosed(url)), "replay_divergence")
    assert (finding.pattern, finding.run_ids) == ("P3", ("r1",))
    assert "step:fetch" in finding.evidence[0]


def test_late_topic_events_are_found(tmp_path: Path) -> None:
    """An event published two hours behind what a consumer has already seen is late under
    a five-minute allowed lateness; the topics module journals it and diagnose reports a
    P3 late event."""
    url = url_in(tmp_path)

    async def scenario() -> None:
        store, clock = open_store(url), VirtualClock()
        topic = Topic(store, "contracts", clock=clock)
        await topic.publish({"n": 1}, key="c1", event_time=DEFAULT_EPOCH + timedelta(hours=2))
        await topic.publish({"n": 2}, key="c2", event_time=DEFAULT_EPOCH)

        async def handle(delivery: Delivery) -> None:
            return None

        await Consumer(store, topic, "scorer", handle, clock=clock, lateness=LatenessPolicy(
            "event", timedelta(minutes=5), "drop")).run()
        await store.close()

    asyncio.run(scenario())
    finding = only(asyncio.run(diagnosed(url)), "late_event")
    assert (finding.pattern, finding.count) == ("P3", 1)
    assert "topic=contracts" in finding.evidence[0] and "offset=2" in finding.evidence[0]


def test_a_reply_after_the_run_stopped_listening_is_found(tmp_path: Path) -> None:
    """A run waits a day for a customer's reply, times out and completes, so the reply that
    arrives two days later is never read: a P3 unconsumed message (while the approval
    wake-up it also got, unread by design, is not reported)."""
    url = url_in(tmp_path)

    async def scenario() -> None:
        rt, _ = scripted_runtime([offer_json(pct=45)], url)
        gated = offer_boundary(policy=RejectPolicy(routes={"policy.": Escalate(role="mgr")}))

        @rt.agent("asks")
        async def asks(ctx: RunContext, inp: dict[str, Any]) -> Any:
            await ctx.cross(gated, {"c": "ada"})
            return await ctx.receive("reply", timeout=timedelta(days=1))

        await rt.start("asks", {}, run_id="r1")
        await rt.run_until_idle()
        (approval,) = await rt.store.list_approvals(status="pending")
        assert isinstance(rt.clock, VirtualClock)
        rt.clock.advance(hours=1)
        await rt.decide(approval.approval_id, approve=False, principal="kim@mgr")
        await rt.run_until_idle()
        rt.clock.advance(days=2)
        await rt.deliver("r1", "reply", "reply-1", {"accept": True})
        await run_all(rt)

    asyncio.run(scenario())
    finding = only(asyncio.run(diagnosed(url)), "unconsumed_message")
    assert (finding.pattern, finding.run_ids, finding.count) == ("P3", ("r1",), 1)
    assert "without reading reply-1 on reply" in finding.evidence[0]


# --- ranking and the command ---------------------------------------------------------------


def test_findings_are_ranked_by_earliest_symptom_and_scoped_by_run(tmp_path: Path) -> None:
    """A reject reported as success on day one and a retry loop on day two come out in that
    order; diagnosing one run reports only that run's findings."""
    url = url_in(tmp_path)

    async def scenario() -> None:
        rt, _ = scripted_runtime([offer_json(pct=50)], url)
        once, thrice = offer_boundary(policy=ONE_SHOT), offer_boundary()

        @rt.agent("claims")
        async def claims(ctx: RunContext, inp: dict[str, Any]) -> dict[str, bool]:
            await ctx.cross(once, {"c": "ada"})
            return {"sent": True}

        @rt.agent("loops")
        async def loops(ctx: RunContext, inp: dict[str, Any]) -> str:
            return (await ctx.cross(thrice, {"c": "bob"})).outcome

        await rt.start("claims", {}, run_id="day1")
        await rt.run_until_idle()
        assert isinstance(rt.clock, VirtualClock)
        rt.clock.advance(days=1)
        await rt.start("loops", {}, run_id="day2")
        await run_all(rt)

    asyncio.run(scenario())
    result = asyncio.run(diagnosed(url))
    stamps = [f.first_seen for f in result.findings]
    assert stamps == sorted(stamps)
    signatures = [f.signature for f in result.findings]
    assert signatures.index("reject_reported_as_success") < signatures.index("retry_loop")
    assert {f.signature for f in asyncio.run(diagnosed(url, "day1")).findings} == {
        "reject_reported_as_success", "budget_exhausted"}
    assert all(f.run_ids == ("day2",) for f in asyncio.run(diagnosed(url, "day2")).findings)


def test_the_command_exits_1_with_findings_and_prints_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`threshold diagnose --json` prints one JSON document of the findings and exits 1 when
    any exist; the text form names symptom, cause and correction."""
    url = url_in(tmp_path)

    async def scenario() -> None:
        rt, _ = scripted_runtime([offer_json(pct=50)], url)
        boundary = offer_boundary()

        @rt.agent("loops")
        async def loops(ctx: RunContext, inp: dict[str, Any]) -> str:
            return (await ctx.cross(boundary, {"c": "bob"})).outcome

        await rt.start("loops", {}, run_id="r1")
        await run_all(rt)

    asyncio.run(scenario())
    capsys.readouterr()
    assert main(["diagnose", "--db", url, "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["clean"] is False
    assert {f["signature"] for f in data["findings"]} == {"retry_loop", "budget_exhausted"}
    assert all(f["signature"] in SIGNATURES for f in data["findings"])
    assert main(["diagnose", "--db", url, "--run", "r1"]) == 1
    text = capsys.readouterr().out
    assert "symptom:" in text and "correction:" in text and "(SDB:" in text
    assert main(["diagnose", "--db", url, "--run", "nope"]) == 2

