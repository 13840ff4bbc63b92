"""P4 throttles: durable caps counted in the store, consumed only by commits."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from helpers import Ledger, Offer, cap, offer_json
from threshold import Boundary, Prompt, RunContext, Runtime, VirtualClock, open_store
from threshold.apps.renewal.customers import data_file
from threshold.clock import DEFAULT_EPOCH
from threshold.effects import EffectContext
from threshold.errors import CrashInjected, ThrottleExceeded
from threshold.models import ModelRegistry, ScriptedModel
from threshold.patterns.policy import Policy, load_policy
from threshold.patterns.throttle import Throttle
from threshold.testing import CrashPlan

POLICY = load_policy(data_file("policy.yaml"))


def with_caps(**caps: Any) -> Policy:
    return POLICY.model_copy(update={"throttle": POLICY.throttle.model_copy(update=caps)})


def runtime_on(url: str, answers: list[str], policy: Policy, ledger: Ledger, *,
               crash: CrashPlan | None = None) -> tuple[Runtime, Throttle]:
    """A fresh Runtime and store object on ``url`` with a throttled, gated boundary."""
    models = ModelRegistry()
    models.add("scripted", ScriptedModel(answers))
    runtime = Runtime(open_store(url), clock=VirtualClock(), models=models,
                      default_model="scripted", crash_hook=crash)
    throttle = Throttle(runtime.store, policy, name="offers", clock=runtime.clock)
    boundary = Boundary("offer", output=Offer, prompt=Prompt("offer", "1", "Customer {c}."),
                        verifiers=[cap, throttle.gate()],
                        commit=throttle.guard_commit(ledger.commit,
                                                     tenant=lambda v, e: "C-001"))

    @runtime.agent("renew")
    async def renew(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        crossing = await ctx.cross(boundary, {"c": inp["c"]}, facts={"tenant": "C-001"})
        return crossing.to_json()

    return runtime, throttle


async def outcomes(runtime: Runtime) -> dict[str, str]:
    return {r.run_id: r.result["outcome"] for r in await runtime.store.list_runs()
            if r.status == "completed"}


def test_caps_hold_across_a_restart(tmp_path: Path) -> None:
    """Two commits through one Runtime, then a new Runtime and store object on the same
    SQLite file: only one more fits the per-minute cap of 3; the rest are refused by the
    budget gate with rule throttle.per_min and policy v7."""
    url = f"sqlite:///{tmp_path / 't.db'}"
    policy = with_caps(per_min=3)
    ledger = Ledger()

    async def first() -> None:
        runtime, _ = runtime_on(url, [offer_json(pct=10)], policy, ledger)
        for i in range(2):
            await runtime.start("renew", {"c": f"c{i}"}, run_id=f"a{i}")
        await runtime.run_until_idle()
        await runtime.store.close()

    async def second() -> None:
        runtime, throttle = runtime_on(url, [offer_json(pct=10)], policy, ledger)
        # One run at a time, so each gate sees the commit before it (runs that pass the
        # gate together are refused by the commit guard: the next test).
        runtime.concurrency = 1
        for i in range(3):
            await runtime.start("renew", {"c": f"c{i}"}, run_id=f"b{i}")
        await runtime.run_until_idle()
        result = await outcomes(runtime)
        assert sorted(result.values()) == ["aborted", "aborted", "committed", "committed",
                                           "committed"]
        refused = [v for v in await runtime.store.list_verdicts()
                   if v.verifier == "policy.throttle" and v.verdict == "reject"]
        assert {(v.code, v.verifier_version) for v in refused} == {
            ("policy.throttle.per_min", "v7")}
        assert (await throttle.usage(at=DEFAULT_EPOCH))["per_min"] == 3
        await runtime.store.close()

    asyncio.run(first())
    asyncio.run(second())
    assert len(ledger.calls) == 3


def test_the_commit_guard_refuses_even_without_the_budget_gate() -> None:
    """The commit's guard is what counts: with no budget gate in front (as when two workers
    pass the gate together), the commit over the cap fails with ThrottleExceeded and its
    effect is not performed."""
    ledger = Ledger()

    async def go() -> None:
        models = ModelRegistry()
        models.add("scripted", ScriptedModel([offer_json(pct=10)]))
        runtime = Runtime(open_store("memory://"), clock=VirtualClock(), models=models,
                          default_model="scripted")
        throttle = Throttle(runtime.store, with_caps(per_min=1), clock=runtime.clock)
        boundary = Boundary("offer", output=Offer, prompt=Prompt("offer", "1", "C {c}."),
                            commit=throttle.guard_commit(ledger.commit))

        @runtime.agent("renew")
        async def renew(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
            return (await ctx.cross(boundary, {"c": inp["c"]})).to_json()

        for i in range(2):
            await runtime.start("renew", {"c": f"c{i}"}, run_id=f"r{i}")
        await runtime.run_until_idle()
        runs = {r.run_id: r.result for r in await runtime.store.list_runs()}
        assert runs["r0"]["outcome"] == "committed"
        assert runs["r1"]["outcome"] == "failed"
        assert "ThrottleExceeded" in runs["r1"]["reason"]
        assert "throttle.per_min" in runs["r1"]["reason"]
        assert ledger.calls == ["r0/1/offer"]

    asyncio.run(go())


def test_a_rejected_crossing_consumes_nothing() -> None:
    """A crossing refused by another verifier never reaches its commit and leaves the
    throttle untouched."""
    ledger = Ledger()

    async def go() -> None:
        runtime, throttle = runtime_on("memory://", [offer_json(pct=95)], with_caps(per_min=1),
                                       ledger)
        await runtime.start("renew", {"c": "x"}, run_id="r1")
        await runtime.run_until_idle()
        assert (await outcomes(runtime))["r1"] == "aborted"
        assert await throttle.usage(at=DEFAULT_EPOCH, tenant="C-001") == {
            "per_min": 0, "per_tenant_per_hour": 0, "dollars": 0}
        assert await runtime.store.list_events(kind="throttle.consumed") == []

    asyncio.run(go())


def test_a_crash_after_the_effect_is_counted_once(tmp_path: Path) -> None:
    """A process crash after the effect and before its record is resumed with the same key:
    the throttle counts that commit once, not twice."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    ledger = Ledger()

    async def crashing() -> None:
        runtime, _ = runtime_on(url, [offer_json(pct=10)], POLICY, ledger,
                                crash=CrashPlan("after_effect", mode="raise"))
        await runtime.start("renew", {"c": "x"}, run_id="r1")
        with pytest.raises(BaseExceptionGroup) as crashed:
            await runtime.run_until_idle()
        assert crashed.group_contains(CrashInjected)

    async def resumed() -> None:
        runtime, throttle = runtime_on(url, [offer_json(pct=10)], POLICY, ledger)
        await runtime.run_until_idle()
        assert (await outcomes(runtime))["r1"] == "committed"
        assert await throttle.usage(at=DEFAULT_EPOCH, tenant="C-001") == {
            "per_min": 1, "per_tenant_per_hour": 1, "dollars": 0}
        consumed = await runtime.store.list_events("r1", kind="throttle.consumed")
        assert len(consumed) == 1

    asyncio.run(crashing())
    asyncio.run(resumed())
    assert ledger.calls == ["r1/1/offer", "r1/1/offer"]  # same key: the receiver dedupes


def test_an_effect_that_raises_gives_its_capacity_back() -> None:
    """A commit whose effect raises releases what it consumed, so a failure does not eat
    into the cap; the release is journaled."""

    async def go() -> None:
        store = open_store("memory://")
        throttle = Throttle(store, with_caps(per_min=1), clock=VirtualClock())

        async def broken(value: Offer, effect: Any) -> None:
            raise ConnectionError("CRM down")

        guarded = throttle.guard_commit(broken)
        ectx = EffectContext("r1/1/offer", "r1", 1, "offer", DEFAULT_EPOCH)
        with pytest.raises(ConnectionError):
            await guarded(Offer(action="renew", discount_pct=5), ectx)
        assert (await throttle.usage(at=DEFAULT_EPOCH))["per_min"] == 0
        released = await store.list_events("r1", kind="throttle.released")
        assert [e.data["key"] for e in released] == ["r1/1/offer"]
        # The capacity is really back: another effect fits the cap of one.
        await throttle.consume("r2/1/offer", at=DEFAULT_EPOCH)

    asyncio.run(go())


def test_the_tightest_cap_wins_and_names_its_rule() -> None:
    """Per-tenant and dollar caps refuse on their own while the per-minute cap has room,
    each with its own rule; a refused consume takes nothing from any window."""

    async def go() -> None:
        store = open_store("memory://")
        throttle = Throttle(store, with_caps(per_min=60, per_tenant_per_hour=2,
                                             daily_dollars_cap=100.0), clock=VirtualClock())
        at = DEFAULT_EPOCH
        await throttle.consume("k1", at=at, tenant="C-001", dollars=60.0)
        await throttle.consume("k2", at=at, tenant="C-001")
        with pytest.raises(ThrottleExceeded) as tenant_cap:
            await throttle.consume("k3", at=at, tenant="C-001")
        assert tenant_cap.value.rule == "throttle.per_tenant_per_hour"
        assert tenant_cap.value.policy_version == "v7"
        with pytest.raises(ThrottleExceeded) as dollar_cap:
            await throttle.consume("k4", at=at, tenant="C-002", dollars=50.0)
        assert dollar_cap.value.rule == "throttle.daily_dollars_cap"
        await throttle.consume("k5", at=at, tenant="C-002", dollars=40.0)
        assert await throttle.usage(at=at, tenant="C-002") == {
            "per_min": 3, "per_tenant_per_hour": 1, "dollars": 100.0}
        # Consuming the same key again is a no-op, not a second unit.
        await throttle.consume("k5", at=at, tenant="C-002", dollars=40.0)
        assert (await throttle.usage(at=at))["per_min"] == 3

    asyncio.run(go())


def test_windows_follow_the_injected_clock() -> None:
    """A full minute window refuses; a minute later on the virtual clock there is room,
    and the next day the dollar cap starts again from zero."""

    async def go() -> None:
        clock = VirtualClock()
        throttle = Throttle(open_store("memory://"), with_caps(per_min=1), clock=clock)
        await throttle.consume("k1", at=clock.now(), dollars=100.0)
        assert not (await throttle.check(at=clock.now())).allowed
        clock.advance(minutes=1)
        assert (await throttle.check(at=clock.now())).allowed
        assert not (await throttle.check(at=clock.now(), dollars=1.0)).allowed
        assert (await throttle.check(at=clock.now() + timedelta(days=1), dollars=1.0)).allowed

    asyncio.run(go())


WORKER = textwrap.dedent("""
    import asyncio, json, os, sys, time
    from threshold import open_store
    from threshold.apps.renewal.customers import data_file
    from threshold.clock import DEFAULT_EPOCH
    from threshold.errors import ThrottleExceeded
    from threshold.patterns.policy import load_policy
    from threshold.patterns.throttle import Throttle

    async def main(url, name):
        policy = load_policy(data_file("policy.yaml"))
        policy = policy.model_copy(update={"throttle": policy.throttle.model_copy(
            update={"per_min": 120})})
        throttle = Throttle(open_store(url), policy)
        while not os.path.exists(url.removeprefix("sqlite:///") + ".go"):
            time.sleep(0.005)  # start together, so the writers really overlap
        won = 0
        for i in range(50):
            try:
                await throttle.consume(f"{name}-{i}", at=DEFAULT_EPOCH)
                won += 1
            except ThrottleExceeded:
                pass
            await asyncio.sleep(0)
        print(json.dumps({"won": won}))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


def test_concurrent_worker_processes_never_exceed_the_cap(tmp_path: Path) -> None:
    """Four processes race 200 effects for a per-minute cap of 120 on one SQLite file:
    exactly 120 are counted, by compare-and-swap, whoever wins."""
    path = tmp_path / "race.db"
    url = f"sqlite:///{path}"
    open_store(url)  # create the schema once, before the race
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, f"w{n}"],
                              stdout=subprocess.PIPE, text=True) for n in range(4)]
    Path(f"{path}.go").touch()
    won = [json.loads(p.communicate(timeout=120)[0])["won"] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(won) == 120

    async def count() -> int:
        throttle = Throttle(open_store(url), POLICY)
        return int((await throttle.usage(at=DEFAULT_EPOCH))["per_min"])

    assert asyncio.run(count()) == 120
