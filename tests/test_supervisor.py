"""P4 supervision: one-for-one restarts with durable backoff, intensity limit, escalation."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from helpers import scripted_runtime
from threshold import RunContext, Runtime, VirtualClock, open_store
from threshold.clock import DEFAULT_EPOCH, from_iso
from threshold.errors import CrashInjected, RestartLimitExceeded, UnauthorizedError
from threshold.patterns.supervisor import ChildContext, RestartPolicy, Supervisor

POLICY = RestartPolicy(max_restarts=3, within=timedelta(minutes=1),
                       backoff=timedelta(seconds=1), escalate_to="on_call_engineer")
ON_CALL = "olivia@on_call_engineer"


def supervised(runtime: Runtime, child: Any, policy: RestartPolicy = POLICY) -> None:
    @runtime.agent("sup")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> Any:
        return await Supervisor(ctx, policy, name="sync").run("crm-sync", child)


async def backoff_fire_offsets(runtime: Runtime, run_id: str) -> list[float]:
    timers = await runtime.store.list_timers(run_id)
    return [(from_iso(t.fire_at) - DEFAULT_EPOCH).total_seconds() for t in timers
            if t.purpose == "supervisor.backoff"]


def test_backs_off_exponentially_then_escalates() -> None:
    """A child that always fails is restarted after 1 s, 2 s and 4 s on the virtual clock;
    its fourth failure within a minute escalates to the on-call engineer's inbox."""
    runtime, _ = scripted_runtime([])
    attempts: list[tuple[int, float]] = []

    async def child(cctx: ChildContext) -> None:
        attempts.append((cctx.attempt, (cctx.now() - DEFAULT_EPOCH).total_seconds()))
        raise ConnectionError("CRM refused the connection")

    supervised(runtime, child)

    async def go() -> None:
        await runtime.start("sup", {}, run_id="s1")
        await runtime.run_until_idle()
        assert await backoff_fire_offsets(runtime, "s1") == [1.0, 3.0, 7.0]
        restarts = await runtime.store.list_events("s1", kind="supervisor.restart")
        assert [(e.data["attempt"], e.data["delay_s"]) for e in restarts] == [
            (2, 1.0), (3, 2.0), (4, 4.0)]
        [escalated] = await runtime.store.list_events("s1", kind="supervisor.escalated")
        assert escalated.data["failures"] == 4 and escalated.data["role"] == "on_call_engineer"
        [approval] = await runtime.store.list_approvals(status="pending")
        assert approval.role == "on_call_engineer"
        assert "failed 4 times within 60 s" in approval.reason
        assert "CRM refused the connection" in approval.reason
        run = await runtime.store.get_run("s1")
        assert run is not None and run.status == "waiting"

    asyncio.run(go())
    # Each attempt ran at the time its backoff timer fired (replays repeat earlier ones).
    assert sorted(set(attempts)) == [(1, 0.0), (2, 1.0), (3, 3.0), (4, 7.0)]


def test_an_approved_escalation_keeps_restarting_until_the_child_succeeds() -> None:
    """Approving the escalation clears the intensity window: the child is restarted again
    and the run completes with its result."""
    runtime, _ = scripted_runtime([])

    async def child(cctx: ChildContext) -> str:
        if cctx.attempt < 6:
            raise TimeoutError(f"attempt {cctx.attempt}")
        return f"synced on attempt {cctx.attempt}"

    supervised(runtime, child)

    async def go() -> None:
        await runtime.start("sup", {}, run_id="s1")
        await runtime.run_until_idle()
        [approval] = await runtime.store.list_approvals(status="pending")
        with pytest.raises(UnauthorizedError):
            await runtime.decide(approval.approval_id, approve=True, principal="ivan@intern")
        await runtime.decide(approval.approval_id, approve=True, principal=ON_CALL,
                             comment="CRM is back, keep going")
        await runtime.run_until_idle()
        run = await runtime.store.get_run("s1")
        assert run is not None and run.status == "completed"
        assert run.result == "synced on attempt 6"
        assert await runtime.store.list_approvals(status="pending") == []

    asyncio.run(go())


def test_a_denied_escalation_fails_the_run_with_a_typed_error() -> None:
    """Denying the escalation raises RestartLimitExceeded into the parent, which (not
    handling it) fails with that error recorded."""
    runtime, _ = scripted_runtime([])

    async def child(cctx: ChildContext) -> None:
        raise ConnectionError("down")

    supervised(runtime, child)

    async def go() -> None:
        await runtime.start("sup", {}, run_id="s1")
        await runtime.run_until_idle()
        [approval] = await runtime.store.list_approvals(status="pending")
        await runtime.decide(approval.approval_id, approve=False, principal=ON_CALL,
                             comment="stop, page the CRM team")
        await runtime.run_until_idle()
        run = await runtime.store.get_run("s1")
        assert run is not None and run.status == "failed"
        assert "RestartLimitExceeded" in (run.error or "")
        assert f"denied by {ON_CALL}" in (run.error or "")

    asyncio.run(go())


def test_the_parent_can_handle_the_limit_itself() -> None:
    """Without anyone to escalate to, the limit raises RestartLimitExceeded at once, and a
    parent that catches it carries on with its own plan."""
    runtime, _ = scripted_runtime([])
    policy = RestartPolicy(max_restarts=1, within=timedelta(minutes=1), escalate_to=None)

    async def child(cctx: ChildContext) -> None:
        raise ConnectionError("down")

    @runtime.agent("sup")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> str:
        try:
            await Supervisor(ctx, policy).run("crm-sync", child)
        except RestartLimitExceeded as exc:
            return f"gave up after {exc.restarts}"
        return "unreachable"

    async def go() -> None:
        await runtime.start("sup", {}, run_id="s1")
        await runtime.run_until_idle()
        run = await runtime.store.get_run("s1")
        assert run is not None and (run.status, run.result) == ("completed", "gave up after 2")
        assert await runtime.store.list_approvals() == []

    asyncio.run(go())


def test_an_undecided_escalation_is_denied_when_its_sla_lapses() -> None:
    """With an SLA, nobody deciding counts as a denial at the SLA: the run fails with the
    typed error and the approval is timed out by the SLA actor."""
    runtime, _ = scripted_runtime([])

    async def child(cctx: ChildContext) -> None:
        raise ConnectionError("down")

    supervised(runtime, child, RestartPolicy(max_restarts=0, sla=timedelta(hours=1)))

    async def go() -> None:
        await runtime.start("sup", {}, run_id="s1")
        await runtime.run_until_idle()
        run = await runtime.store.get_run("s1")
        assert run is not None and run.status == "failed"
        [approval] = await runtime.store.list_approvals()
        assert (approval.status, approval.decided_by) == ("timed_out", "sla-fallback")
        assert from_iso(approval.decided_at or "") - DEFAULT_EPOCH == timedelta(hours=1)

    asyncio.run(go())


def test_a_crash_does_not_reset_the_restart_count(tmp_path: Path) -> None:
    """A process crash during the third attempt, then a new Runtime on the same file: the
    two failures before the crash still count, so the escalation comes at the fourth
    failure with the same backoff times as without the crash."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    crashed: list[bool] = []

    async def child(cctx: ChildContext) -> None:
        if cctx.attempt == 3 and not crashed:
            crashed.append(True)
            raise CrashInjected("during attempt 3")
        raise ConnectionError("down")

    async def first() -> None:
        runtime = Runtime(open_store(url), clock=VirtualClock())
        supervised(runtime, child)
        await runtime.start("sup", {}, run_id="s1")
        with pytest.raises(BaseExceptionGroup) as info:
            await runtime.run_until_idle()
        assert info.group_contains(CrashInjected)

    async def second() -> None:
        runtime = Runtime(open_store(url), clock=VirtualClock())
        supervised(runtime, child)
        await runtime.run_until_idle()
        assert await backoff_fire_offsets(runtime, "s1") == [1.0, 3.0, 7.0]
        [escalated] = await runtime.store.list_events("s1", kind="supervisor.escalated")
        assert escalated.data["failures"] == 4
        assert len(await runtime.store.list_approvals(status="pending")) == 1

    asyncio.run(first())
    asyncio.run(second())


def test_children_are_restarted_one_for_one() -> None:
    """Only the failing child is restarted; its siblings run once each, and each child's
    failed step is journaled, so a replay does not call it again."""
    runtime, _ = scripted_runtime([])
    calls = {"a": 0, "b": 0, "c": 0}

    def flaky_b() -> str:
        calls["b"] += 1
        if calls["b"] < 3:
            raise ConnectionError(f"call {calls['b']}")
        return "b-done"

    async def a(cctx: ChildContext) -> str:
        return str(await cctx.step("a", lambda: calls.__setitem__("a", calls["a"] + 1) or "a"))

    async def b(cctx: ChildContext) -> str:
        return str(await cctx.step("b", flaky_b))

    async def c(cctx: ChildContext) -> str:
        calls["c"] += 1
        return "c-done"

    @runtime.agent("sup")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        return await Supervisor(ctx, POLICY).run_all({"a": a, "b": b, "c": c})

    async def go() -> None:
        await runtime.start("sup", {}, run_id="s1")
        await runtime.run_until_idle()
        run = await runtime.store.get_run("s1")
        assert run is not None and run.status == "completed"
        assert run.result == {"a": "a", "b": "b-done", "c": "c-done"}
        failures = await runtime.store.list_events("s1", kind="supervisor.restart")
        assert [e.data["child"] for e in failures] == ["b", "b"]
        assert "StepFailed: step b failed: ConnectionError: call 1" in failures[0].data["error"]

    asyncio.run(go())
    # a's step and b's three steps each ran once, although the run re-executed after each
    # backoff; c is plain code and re-executes on each resume of the run.
    assert (calls["a"], calls["b"]) == (1, 3)
