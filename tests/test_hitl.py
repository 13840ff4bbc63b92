"""P6 human in the loop: SLA fallbacks, the policy's kill switch, approval statistics."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from helpers import Ledger, Offer, offer_json, scripted_runtime
from threshold import (
    ApproveWithCap,
    Boundary,
    Prompt,
    RejectPolicy,
    RunContext,
    Runtime,
    SystemClock,
    VirtualClock,
    audit,
    open_store,
)
from threshold.apps.renewal.customers import data_file
from threshold.boundary import Fallback
from threshold.clock import from_iso
from threshold.errors import UnauthorizedError
from threshold.models import Completion, ModelRegistry, ModelRequest, ModelSpec
from threshold.patterns.gate import discount_gate
from threshold.patterns.hitl import approval_stats, breach_routes, kill_principals
from threshold.patterns.policy import load_policy

POLICY = load_policy(data_file("policy.yaml"))
SLA = timedelta(hours=4)


def sla_runtime(fallback: Fallback, url: str = "memory://", reroute_to: str | None = None,
                sla: timedelta | None = SLA) -> tuple[Runtime, Ledger]:
    """A runtime whose 90 % offer is gated and escalated, by default with a 4-hour SLA."""
    runtime, _ = scripted_runtime([offer_json(pct=90)], url)
    ledger = Ledger()
    boundary = Boundary("offer", output=Offer, prompt=Prompt("offer", "1", "Customer {c}."),
                        verifiers=[discount_gate(POLICY)], commit=ledger.commit,
                        on_reject=RejectPolicy(routes=breach_routes(
                            POLICY, sla=sla, fallback=fallback, reroute_to=reroute_to)))

    @runtime.agent("renew")
    async def renew(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        crossing = await ctx.cross(boundary, {"c": inp["c"]}, facts={"tenant": "C-999"})
        return crossing.to_json()

    return runtime, ledger


def test_sla_lapse_applies_the_deny_fallback() -> None:
    """Nobody decides within 4 virtual hours: the approval times out by the SLA actor at
    exactly created + 4 h, the crossing is denied and nothing is committed."""
    runtime, ledger = sla_runtime("deny")

    async def go() -> None:
        await runtime.start("renew", {"c": "Acme"}, run_id="r1")
        await runtime.run_until_idle()
        run = await runtime.store.get_run("r1")
        assert run is not None and run.result["outcome"] == "denied"
        [approval] = await runtime.store.list_approvals()
        assert (approval.status, approval.decided_by) == ("timed_out", "sla-fallback")
        assert from_iso(approval.decided_at or "") - from_iso(approval.created_at) == SLA
        [timer] = await runtime.store.list_timers("r1")
        assert (timer.purpose, timer.status, timer.fire_at) == (
            "approval_sla", "fired", approval.sla_due)
        assert ledger.calls == []

    asyncio.run(go())


def test_sla_lapse_approves_with_a_cap() -> None:
    """The approve-with-cap fallback commits the proposal clamped to 30 %, and the audit
    counts that commit as a human-plane override with a matching accept."""
    runtime, ledger = sla_runtime(ApproveWithCap("discount_pct", 30))

    async def go() -> None:
        await runtime.start("renew", {"c": "Acme"}, run_id="r1")
        await runtime.run_until_idle()
        run = await runtime.store.get_run("r1")
        assert run is not None and run.result["outcome"] == "committed"
        assert run.result["value"]["discount_pct"] == 30
        assert run.result["effect_result"] == {"sent": 30}
        assert run.result["decided_by"] == "sla-fallback"
        assert ledger.calls == ["r1/1/offer"]
        report = await audit(runtime.store)
        assert report.ok and report.commits_by_override == 1

    asyncio.run(go())


def test_sla_lapse_reroutes_once_then_applies_the_fallback() -> None:
    """The re-route fallback hands the approval to director_ai with a fresh SLA at +4 h;
    when that one lapses too, the declared fallback (deny) applies at +8 h."""
    runtime, ledger = sla_runtime("deny", reroute_to="director_ai")

    async def go() -> None:
        await runtime.start("renew", {"c": "Acme"}, run_id="r1")
        await runtime.run_until_idle()
        [approval] = await runtime.store.list_approvals()
        assert (approval.role, approval.status) == ("director_ai", "timed_out")
        rerouted = [e for e in await runtime.store.list_events("r1", kind="approval.decided")
                    if e.data["status"] == "pending"]
        assert [e.data["role"] for e in rerouted] == ["director_ai"]
        created = from_iso(approval.created_at)
        assert from_iso(rerouted[0].at) - created == SLA
        assert from_iso(approval.decided_at or "") - created == 2 * SLA
        run = await runtime.store.get_run("r1")
        assert run is not None and run.result["outcome"] == "denied" and ledger.calls == []

    asyncio.run(go())


def test_a_rerouted_approval_is_decided_by_the_new_role(tmp_path: Path) -> None:
    """After the re-route, the original role may no longer decide; the director approves
    within the new SLA and the run commits with the director recorded."""
    path = tmp_path / "reroute.db"
    runtime, ledger = sla_runtime("deny", f"sqlite:///{path}", reroute_to="director_ai")

    def rerouted() -> bool:
        with sqlite3.connect(path) as db:
            row = db.execute("SELECT role FROM approvals").fetchone()
        return row is not None and row[0] == "director_ai"

    async def go() -> None:
        await runtime.start("renew", {"c": "Acme"}, run_id="r1")
        await runtime.serve(poll_seconds=0.01, stop=rerouted)  # stops right at the re-route
        [approval] = await runtime.store.list_approvals(status="pending")
        with pytest.raises(UnauthorizedError):
            await runtime.decide(approval.approval_id, approve=True,
                                 principal="carol@counsel+human_specialist")
        await runtime.decide(approval.approval_id, approve=True, principal="dana@director_ai",
                             comment="one-off, strategic")
        await runtime.run_until_idle()
        run = await runtime.store.get_run("r1")
        assert run is not None and run.result["outcome"] == "committed"
        assert run.result["decided_by"] == "dana@director_ai"
        assert ledger.calls == ["r1/1/offer"]

    asyncio.run(go())


def test_a_crash_before_the_sla_timer_still_applies_the_sla(tmp_path: Path) -> None:
    """When the worker dies after writing the approval but before arming its SLA timer, the
    resumed run arms it from the approval and the fallback applies at created + 4 h instead
    of the run waiting forever."""
    path = tmp_path / "window.db"
    runtime, ledger = sla_runtime("deny", f"sqlite:///{path}")

    def escalated() -> bool:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT count(*) FROM approvals").fetchone()[0] == 1

    async def escalate() -> None:
        await runtime.start("renew", {"c": "Acme"}, run_id="r1")
        await runtime.serve(poll_seconds=0.01, stop=escalated)
        await runtime.store.close()

    asyncio.run(escalate())
    # What the crash leaves: no timer, and the run still leased by the dead worker.
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM timers")
        db.execute("UPDATE runs SET status='running', lease_owner='gone:1:x', "
                   "lease_until='2000-01-01T00:00:00+00:00'")

    async def resume() -> None:
        again, _ = sla_runtime("deny", f"sqlite:///{path}")
        await again.run_until_idle()
        run = await again.store.get_run("r1")
        assert run is not None and run.status == "completed"
        assert run.result["outcome"] == "denied"
        [approval] = await again.store.list_approvals()
        assert approval.status == "timed_out"
        assert from_iso(approval.decided_at or "") - from_iso(approval.created_at) == SLA

    asyncio.run(resume())
    assert ledger.calls == []


# --- the kill switch ---------------------------------------------------------------------


def test_an_unauthorized_kill_is_refused_and_recorded() -> None:
    """A principal outside the policy's kill-switch list is refused, the attempt is
    journaled with allowed=False, and the run carries on; an on-call engineer may kill."""
    runtime, _ = scripted_runtime([offer_json(pct=90)],
                                  kill_principals=kill_principals(POLICY))
    boundary = Boundary("offer", output=Offer, prompt=Prompt("offer", "1", "Customer {c}."),
                        verifiers=[discount_gate(POLICY)],
                        on_reject=RejectPolicy(routes=breach_routes(POLICY)))

    @runtime.agent("renew")
    async def renew(ctx: RunContext, inp: dict[str, Any]) -> str:
        return (await ctx.cross(boundary, {"c": "Acme"})).outcome

    async def go() -> None:
        await runtime.start("renew", {}, run_id="r1")
        await runtime.run_until_idle()  # waiting for a human now
        with pytest.raises(UnauthorizedError) as refused:
            await runtime.kill(principal="mallory@intern", reason="curious", run_id="r1")
        assert "role:on_call_engineer" in refused.value.allowed
        run = await runtime.store.get_run("r1")
        assert run is not None and run.status == "waiting"
        assert runtime.may_kill("role:director_ai") and runtime.may_kill("vp@vp_engineering")
        assert await runtime.kill(principal="olivia@on_call_engineer", reason="incident 42",
                                  run_id="r1") == 1
        run = await runtime.store.get_run("r1")
        assert run is not None and run.status == "killed"
        uses = await runtime.store.list_events("r1", kind="kill_switch")
        assert [(e.data["principal"], e.data["allowed"]) for e in uses] == [
            ("mallory@intern", False), ("olivia@on_call_engineer", True)]

    asyncio.run(go())


class SlowModel:
    """A proposer that takes ``delay`` real seconds per answer."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec("slow", "slow", "1")

    async def complete(self, request: ModelRequest) -> Completion:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return Completion(text=offer_json(pct=5), finish_reason="stop")


def test_the_kill_switch_stops_a_running_run_within_a_second(tmp_path: Path) -> None:
    """In real time, a run looping over crossings with a 2-second model is stopped mid-call
    within one second of a kill thrown from another Runtime on the same store, and it does
    no further crossing."""
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    model = SlowModel(2.0)
    models = ModelRegistry()
    models.add("slow", model)
    worker = Runtime(open_store(url), clock=SystemClock(), models=models, default_model="slow")
    boundary = Boundary("offer", output=Offer, prompt=Prompt("offer", "1", "Customer {c}."))

    @worker.agent("loop")
    async def loop(ctx: RunContext, inp: dict[str, Any]) -> int:
        for i in range(100):
            await ctx.cross(boundary, {"c": f"c{i}"})
        return 100

    async def go() -> None:
        await worker.start("loop", {}, run_id="r1")
        stopping = False
        serving = asyncio.create_task(worker.serve(poll_seconds=0.05, stop=lambda: stopping))
        while len(await worker.store.list_crossings("r1")) < 2:  # looping, and mid-call
            await asyncio.sleep(0.05)
        crossed = len(await worker.store.list_crossings("r1"))
        operator = Runtime(open_store(url), kill_principals=kill_principals(POLICY))
        started = time.monotonic()
        await operator.kill(principal="olivia@on_call_engineer", reason="runaway", run_id="r1")
        while (run := await operator.store.get_run("r1")) is not None and \
                run.status != "killed":
            assert time.monotonic() - started < 1.0, "the run was not stopped within 1 s"
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
        calls = model.calls
        await asyncio.sleep(2.5)  # long enough for another crossing, had it continued
        stopping = True
        await serving
        run = await operator.store.get_run("r1")
        assert run is not None and run.status == "killed"
        assert model.calls == calls  # no proposal after the kill
        assert len(await operator.store.list_crossings("r1")) == crossed
        assert elapsed < 1.0

    asyncio.run(go())


# --- approval statistics -----------------------------------------------------------------


def test_approval_stats_measure_rate_and_latency_per_principal() -> None:
    """Decisions, approvals, approve rate and median latency (virtual seconds from the
    request to the decision) are reported per deciding principal."""
    runtime, _ = sla_runtime("deny", sla=None)
    clock = runtime.clock
    assert isinstance(clock, VirtualClock)
    alice, bob = "alice@counsel+human_specialist", "bob@counsel+human_specialist"

    async def go() -> None:
        for i in range(3):
            await runtime.start("renew", {"c": f"c{i}"}, run_id=f"r{i}")
        await runtime.run_until_idle()
        ids = sorted(a.approval_id for a in await runtime.store.list_approvals())
        await runtime.decide(ids[0], approve=True, principal=alice)
        clock.advance(minutes=30)
        await runtime.decide(ids[1], approve=True, principal=alice)
        clock.advance(minutes=30)
        await runtime.decide(ids[2], approve=False, principal=bob, comment="too deep")
        stats = await approval_stats(runtime.store)
        assert stats == {
            alice: {"decisions": 2, "approved": 2, "approve_rate": 1.0,
                    "median_latency_s": 900.0},
            bob: {"decisions": 1, "approved": 0, "approve_rate": 0.0,
                  "median_latency_s": 3600.0},
        }

    asyncio.run(go())
