"""P2 saga: compensation in reverse order, idempotent and retried with durable backoff,
escalated when it keeps failing, and resumed after a real crash. Effects write to a real
SQLite sink keyed by idempotency key."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from procs.saga_sink import Sink
from threshold import (
    Boundary,
    EffectContext,
    ModelRegistry,
    Prompt,
    RejectPolicy,
    RunContext,
    Runtime,
    ScriptedModel,
    VirtualClock,
    open_store,
)
from threshold.errors import SagaAborted
from threshold.patterns.saga import CompensationRetry, Saga, describe_coordination

HERE = Path(__file__).parent
AgentBody = Callable[[RunContext, Sink], Awaitable[Any]]


def runtime(tmp_path: Path, body: AgentBody, sink: Sink,
            models: ModelRegistry | None = None) -> Runtime:
    rt = Runtime(open_store(f"sqlite:///{tmp_path / 'runs.db'}"), clock=VirtualClock(),
                 models=models)

    @rt.agent("saga")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> Any:
        return await body(ctx, sink)

    return rt


async def three_steps(ctx: RunContext, sink: Sink) -> dict[str, Any]:
    saga = Saga(ctx, "renewal", retry=CompensationRetry(max_attempts=3,
                                                          backoff=timedelta(seconds=30)))
    try:
        await saga.step("reserve", sink.effect("reserve"), compensate=sink.compensation("release"))
        await saga.step("charge", sink.effect("charge"), compensate=sink.compensation("refund"))
        await saga.step("notify", sink.effect("notify"))
    except SagaAborted as exc:
        return {"aborted": exc.step, "compensated": exc.compensated}
    await saga.complete()
    return {"completed": saga.steps}


async def finish(rt: Runtime, run_id: str = "r1") -> Any:
    await rt.start("saga", {}, run_id=run_id)
    await rt.run_until_idle()
    return await rt.store.get_run(run_id)


def test_failed_step_compensates_in_reverse_with_retries_until_success(tmp_path: Path) -> None:
    """Step 3 fails; refund then release run newest first, and a release that fails twice is
    retried after durable backoffs (30 s, 60 s) until it succeeds, applied exactly once."""
    sink = Sink(tmp_path / "sink.db")
    sink.fail("notify", -1)
    sink.fail("release", 2)
    rt = runtime(tmp_path, three_steps, sink)

    async def scenario() -> None:
        start = rt.clock.now()
        run = await finish(rt)
        assert run is not None and run.status == "completed", run
        assert run.result == {"aborted": "notify", "compensated": ["charge", "reserve"]}
        assert sink.applied() == ["reserve", "charge", "refund", "release"]
        release = sink.calls("release")
        assert [outcome for _, _, outcome in release] == ["error", "error", "ok"]
        assert len({key for _, key, _ in release}) == 1  # one idempotency key for all tries
        assert release[0][1] == "r1/saga:renewal/reserve/compensate"
        assert [o for _, _, o in sink.calls("refund")] == ["ok"]
        assert rt.clock.now() - start == timedelta(seconds=90)  # 30 s + 60 s of backoff
        events = [e for e in await rt.store.list_events("r1") if e.kind == "saga.compensate"]
        assert [(e.data["step"], e.data["attempt"], e.data["status"]) for e in events] == [
            ("charge", 1, "ok"), ("reserve", 1, "failed"), ("reserve", 2, "failed"),
            ("reserve", 3, "ok")]
        effects = {e.key: e for e in await rt.store.list_effects("r1")}
        assert effects["r1/saga:renewal/reserve/compensate"].performed == 3
        assert effects["r1/saga:renewal/reserve/compensate"].status == "done"

    asyncio.run(scenario())


def test_compensation_that_keeps_failing_escalates_and_waits_for_a_human(
        tmp_path: Path) -> None:
    """After max attempts the failure is journaled and the run waits on 'saga.resolution';
    an invalid message is ignored, a 'retry' after the fix compensates, nothing is lost."""
    sink = Sink(tmp_path / "sink.db")
    sink.fail("notify", -1)
    sink.fail("refund", -1)

    async def body(ctx: RunContext, sink: Sink) -> Any:
        saga = Saga(ctx, "renewal", retry=CompensationRetry(max_attempts=2,
                                                              backoff=timedelta(minutes=5)))
        try:
            await saga.step("charge", sink.effect("charge"), compensate=sink.compensation("refund"))
            await saga.step("notify", sink.effect("notify"))
        except SagaAborted as exc:
            return exc.compensated
        return None

    rt = runtime(tmp_path, body, sink)

    async def scenario() -> None:
        run = await finish(rt)
        assert run is not None and run.status == "waiting"
        kinds = [e.kind for e in await rt.store.list_events("r1")]
        assert kinds[-1] == "saga.compensation_failed"
        failed = (await rt.store.list_events("r1", kind="saga.compensation_failed"))[0]
        assert failed.data["attempts"] == 2 and failed.data["channel"] == "saga.resolution"
        await rt.deliver("r1", "saga.resolution", "m1", {"action": "ignore-it"})
        await rt.run_until_idle()
        assert (await rt.store.get_run("r1")).status == "waiting"  # type: ignore[union-attr]
        sink.fail("refund", 0)  # someone fixed the payment system
        await rt.deliver("r1", "saga.resolution", "m2", {"action": "retry", "by": "ops@oncall"})
        await rt.run_until_idle()
        run = await rt.store.get_run("r1")
        assert run is not None and run.status == "completed" and run.result == ["charge"]
        assert [o for _, _, o in sink.calls("refund")] == ["error", "error", "ok"]
        assert sink.applied() == ["charge", "refund"]
        resolution = await rt.store.list_events("r1", kind="saga.resolution")
        assert [(e.data["action"], e.data["by"]) for e in resolution] == [("retry", "ops@oncall")]
        assert len(await rt.store.list_events("r1", kind="saga.resolution_invalid")) == 1

    asyncio.run(scenario())


def test_a_human_can_resolve_a_compensation_by_hand(tmp_path: Path) -> None:
    """A 'resolved' decision ends the wait without calling the compensation again."""
    sink = Sink(tmp_path / "sink.db")
    sink.fail("notify", -1)
    sink.fail("refund", -1)

    async def body(ctx: RunContext, sink: Sink) -> Any:
        saga = Saga(ctx, "renewal", retry=CompensationRetry(max_attempts=1))
        try:
            await saga.step("charge", sink.effect("charge"), compensate=sink.compensation("refund"))
            await saga.step("notify", sink.effect("notify"))
        except SagaAborted as exc:
            return exc.compensated
        return None

    rt = runtime(tmp_path, body, sink)

    async def scenario() -> None:
        assert (await finish(rt)).status == "waiting"  # type: ignore[union-attr]
        await rt.deliver("r1", "saga.resolution", "m1",
                         {"action": "resolved", "by": "bob@finance", "note": "refunded by hand"})
        await rt.run_until_idle()
        run = await rt.store.get_run("r1")
        assert run is not None and run.status == "completed"
        assert len(sink.calls("refund")) == 1

    asyncio.run(scenario())


class Offer(BaseModel):
    action: Literal["renew", "churn"]
    discount_pct: int


def test_uncommitted_crossing_aborts_the_saga(tmp_path: Path) -> None:
    """A saga crossing that is not committed compensates the earlier steps (Abort inside a
    saga), and the committed crossing of a later run registers its own compensation."""
    sink = Sink(tmp_path / "sink.db")
    models = ModelRegistry()
    models.add("scripted:bad", ScriptedModel(["not json"]))
    models.add("scripted:good", ScriptedModel(['{"action": "renew", "discount_pct": 5}']))

    async def send(offer: Offer, e: EffectContext) -> Any:
        return sink.call("send_offer", e.key)

    pricing = Boundary("pricing", output=Offer, prompt=Prompt("p", "1", "Offer for {name}"),
                       commit=send, on_reject=RejectPolicy(max_attempts=1))

    async def body(ctx: RunContext, sink: Sink) -> Any:
        saga = Saga(ctx, "renewal")
        try:
            await saga.step("reserve", sink.effect("reserve"),
                            compensate=sink.compensation("release"))
            await saga.cross(pricing, {"name": "ada"}, model=ctx.run.input["model"],
                             compensate=sink.compensation("withdraw"))
            await saga.step("notify", sink.effect("notify"))
        except SagaAborted as exc:
            return exc.compensated
        await saga.complete()
        return saga.steps

    rt = runtime(tmp_path, body, sink, models)

    async def scenario() -> None:
        await rt.start("saga", {"model": "scripted:bad"}, run_id="bad")
        await rt.run_until_idle()
        bad = await rt.store.get_run("bad")
        assert bad is not None and bad.result == ["reserve"]
        assert sink.applied() == ["reserve", "release"]
        sink.fail("notify", 1)
        await rt.start("saga", {"model": "scripted:good"}, run_id="good")
        await rt.run_until_idle()
        good = await rt.store.get_run("good")
        assert good is not None and good.result == ["pricing", "reserve"]
        assert sink.applied()[2:] == ["reserve", "send_offer", "withdraw", "release"]
        (crossing,) = await rt.store.list_crossings("good")
        assert [k for _, k, _ in sink.calls("withdraw")] == [
            f"{crossing.crossing_id}/pricing/compensate"]

    asyncio.run(scenario())


def test_suspend_inside_a_saga_is_not_a_failure(tmp_path: Path) -> None:
    """A durable sleep inside ``async with Saga`` suspends the run without compensating; an
    exception from agent code afterwards compensates and raises SagaAborted."""
    sink = Sink(tmp_path / "sink.db")

    async def body(ctx: RunContext, sink: Sink) -> Any:
        try:
            async with Saga(ctx, "renewal") as saga:
                await saga.step("reserve", sink.effect("reserve"),
                                compensate=sink.compensation("release"))
                await ctx.sleep(timedelta(days=3))
                raise LookupError("customer record vanished")
        except SagaAborted as exc:
            return {"reason": exc.reason, "compensated": exc.compensated,
                    "cause": type(exc.__cause__).__name__}

    rt = runtime(tmp_path, body, sink)

    async def scenario() -> None:
        run = await finish(rt)
        assert run is not None and run.status == "completed"
        assert run.result == {"reason": "LookupError: customer record vanished",
                              "compensated": ["reserve"], "cause": "LookupError"}
        assert sink.applied() == ["reserve", "release"]
        assert len(sink.calls("release")) == 1

    asyncio.run(scenario())


def saga_proc(db: Path, sink: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "procs.saga_crash", str(db), str(sink), *extra],
                          cwd=HERE, capture_output=True, text=True, timeout=120)


def test_crash_after_step_two_resumes_and_compensates_exactly_once(tmp_path: Path) -> None:
    """A process killed with os._exit right after step 2's effect is recorded; a new process
    resumes, step 3 fails, and refund then release each reach the sink exactly once."""
    db, sink_path = tmp_path / "runs.db", tmp_path / "sink.db"
    sink = Sink(sink_path)
    sink.fail("notify", -1)
    crashed = saga_proc(db, sink_path, "--crash", "after_record:2")
    assert crashed.returncode == 137, crashed.stderr
    assert sink.applied() == ["reserve", "charge"]
    resumed = saga_proc(db, sink_path)
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert final["status"] == "completed"
    assert final["result"] == {"aborted": "notify", "compensated": ["charge", "reserve"]}
    assert sink.applied() == ["reserve", "charge", "refund", "release"]
    actions = [a for a, _, _ in sink.calls()]
    assert actions == ["reserve", "charge", "notify", "refund", "release"]  # each once


def test_crash_mid_compensation_resumes_the_chain(tmp_path: Path) -> None:
    """Killed right after the first compensation (refund) is recorded, the next process
    continues with release and never refunds twice."""
    db, sink_path = tmp_path / "runs.db", tmp_path / "sink.db"
    sink = Sink(sink_path)
    sink.fail("notify", -1)
    crashed = saga_proc(db, sink_path, "--crash", "after_record:3")
    assert crashed.returncode == 137, crashed.stderr
    assert sink.applied() == ["reserve", "charge", "refund"]
    resumed = saga_proc(db, sink_path)
    assert resumed.returncode == 0, resumed.stderr
    assert sink.applied() == ["reserve", "charge", "refund", "release"]
    assert [a for a, _, _ in sink.calls()] == ["reserve", "charge", "notify", "refund",
                                                "release"]


def test_describe_coordination_renders_the_compensation_chain(tmp_path: Path) -> None:
    """The saga's journal events render as readable lines, in journal order."""
    sink = Sink(tmp_path / "sink.db")
    sink.fail("notify", -1)
    sink.fail("release", 1)
    rt = runtime(tmp_path, three_steps, sink)

    async def scenario() -> list[str]:
        await finish(rt)
        return describe_coordination(await rt.store.list_events("r1"))

    lines = asyncio.run(scenario())
    text = "\n".join(lines)
    assert len(lines) == 8, text
    assert "saga.step" in lines[0] and "renewal/reserve: step 1 done" in lines[0]
    assert "renewal/notify: step 3 failed: SinkError: notify refused" in lines[2]
    assert "aborted (step notify failed" in lines[3] and "compensating charge -> reserve" \
        in lines[3]
    assert "renewal/charge: compensation attempt 1 ok" in lines[4]
    assert "renewal/reserve: compensation attempt 1 failed" in lines[5]
    assert "retry in 30s" in lines[5]
    assert "renewal/reserve: compensation attempt 2 ok" in lines[6]
    assert lines[-1].endswith("renewal: compensated charge -> reserve")
