"""Durable timers guarded by a row's version, and inboxes: a timer lapses when an override
moved the row on (90 virtual days in milliseconds), fires when nothing did, survives a
process restart; a message delivered twice (by a retrying sender or a redelivering topic
consumer) is handled once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from threshold import RunContext, Runtime, VirtualClock, open_store
from threshold.clock import DEFAULT_EPOCH, from_iso
from threshold.effects import EffectContext
from threshold.errors import CrashInjected
from threshold.patterns.state_machine import StateMachine
from threshold.patterns.topics import Consumer, Delivery, Topic, deliver_to_runs

HERE = Path(__file__).parent

RENEWAL = StateMachine(
    "renewal", ["init", "offer_sent", "human_required", "expired", "closed"],
    {"init": {"offer_sent"}, "offer_sent": {"expired", "closed", "human_required"},
     "human_required": {"closed", "offer_sent"}, "expired": {"closed"}},
    "init", terminal={"closed"}, pauses={"human_required"})


class OverrideAt:
    """A person who overrides the row on a given day (an actor: acts in clock order)."""

    def __init__(self, rt: Runtime, row_id: str, when: datetime, to_state: str) -> None:
        self.rt, self.row_id, self.when, self.to_state = rt, row_id, when, to_state
        self.done = False

    async def next_due(self) -> datetime | None:
        return None if self.done else self.when

    async def act(self, now: datetime) -> int:
        if self.done or now < self.when:
            return 0
        self.done = True
        await RENEWAL.override(self.rt, self.row_id, self.to_state, "ann@admin",
                               "customer phoned in")
        return 1


def renewal_runtime(tmp_path: Path) -> Runtime:
    rt = Runtime(open_store(f"sqlite:///{tmp_path / 'runs.db'}"), clock=VirtualClock())

    @rt.agent("renewal")
    async def renewal(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        row = await RENEWAL.apply(ctx, ctx.run_id, 0, "offer_sent", {"pct": 10})
        fate = await RENEWAL.sleep(ctx, row, timedelta(days=90), purpose="offer_expiry")
        if fate == "fired":
            row = await RENEWAL.apply(ctx, ctx.run_id, row.version, "expired")
        return {"timer": fate, "at": ctx.now().isoformat(), "version": row.version}

    return rt


def test_a_guarded_timer_lapses_after_a_manual_override_moved_the_row_on(
        tmp_path: Path) -> None:
    """A run waits 90 days guarded by its row's version; on day 30 a person overrides the
    row; on day 90 the timer lapses as a no-op, the run sees "lapsed" and does not expire
    the offer, and the whole 90 days take milliseconds of real time."""
    rt = renewal_runtime(tmp_path)
    rt.actors.append(OverrideAt(rt, "r1", DEFAULT_EPOCH + timedelta(days=30), "closed"))

    async def go() -> None:
        await rt.start("renewal", {}, run_id="r1")
        started = time.perf_counter()
        await rt.run_until_idle()
        elapsed = time.perf_counter() - started
        run = await rt.store.get_run("r1")
        assert run is not None and run.status == "completed", run
        assert run.result["timer"] == "lapsed"
        assert from_iso(run.result["at"]) >= DEFAULT_EPOCH + timedelta(days=90)
        row = await RENEWAL.read(rt, "r1")
        assert (row.state, row.version) == ("closed", 2)  # untouched after the override
        [timer] = await rt.store.list_timers("r1")
        assert (timer.status, timer.guard_key, timer.guard_version) == ("lapsed", "state/r1", 1)
        assert elapsed < 2.0, f"90 virtual days took {elapsed:.2f} s"

    asyncio.run(go())


def test_a_guarded_timer_fires_when_nothing_moved_the_row(tmp_path: Path) -> None:
    """Without the override the same timer fires on day 90 and the run moves the row on
    from the version it armed the timer at."""
    rt = renewal_runtime(tmp_path)

    async def go() -> None:
        await rt.start("renewal", {}, run_id="r1")
        await rt.run_until_idle()
        run = await rt.store.get_run("r1")
        assert run is not None and run.result["timer"] == "fired", run
        assert from_iso(run.result["at"]) == DEFAULT_EPOCH + timedelta(days=90)
        assert (await RENEWAL.read(rt, "r1")).state == "expired"

    asyncio.run(go())


def test_a_timer_survives_a_restart_and_a_new_runtime_fires_it(tmp_path: Path) -> None:
    """A process arms a 30-day guarded timer and dies (os._exit) while its run waits; a
    new process with a new Runtime on the same SQLite file fires the timer and finishes
    the run at the right virtual time."""
    db = tmp_path / "timers.db"
    armed = subprocess.run([sys.executable, "-m", "procs.state_timer", str(db), "arm"],
                           cwd=HERE, capture_output=True, text=True, timeout=120)
    assert armed.returncode == 0 and armed.stdout == "", armed.stderr

    async def pending() -> list[str]:
        store = open_store(f"sqlite:///{db}")
        run = await store.get_run("renewal-42")
        timers = [t.status for t in await store.list_timers("renewal-42")]
        await store.close()
        assert run is not None and run.status == "waiting"
        return timers

    assert asyncio.run(pending()) == ["pending"]
    resumed = subprocess.run([sys.executable, "-m", "procs.state_timer", str(db), "resume"],
                             cwd=HERE, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    out = json.loads(resumed.stdout)
    assert out["status"] == "completed"
    assert out["result"] == {"timer": "fired", "state": "expired", "version": 2}
    assert from_iso(out["now"]) == DEFAULT_EPOCH + timedelta(days=30)


def inbox_runtime(tmp_path: Path, handled: list[str]) -> Runtime:
    rt = Runtime(open_store(f"sqlite:///{tmp_path / 'inbox.db'}"), clock=VirtualClock())

    @rt.agent("replies")
    async def replies(ctx: RunContext, inp: dict[str, Any]) -> list[str]:
        seen = []
        while (message := await ctx.receive("reply", timeout=timedelta(days=7))) is not None:
            async def handle(effect: EffectContext, m: dict[str, Any] = message) -> str:
                handled.append(m["id"])
                return str(m["id"])

            seen.append(await ctx.effect("handle_reply", handle))
        return seen

    return rt


def test_a_message_delivered_twice_is_handled_once(tmp_path: Path) -> None:
    """A sender that retries (at-least-once) delivers message m1 twice: the inbox keeps one
    m1, the second delivery reports it is not new, and the run handles m1 and m2 once
    each, even though it is resumed between them."""
    handled: list[str] = []
    rt = inbox_runtime(tmp_path, handled)

    async def go() -> None:
        await rt.start("replies", {}, run_id="r1")
        assert await rt.deliver("r1", "reply", "m1", {"id": "m1"}) is True
        assert await rt.deliver("r1", "reply", "m1", {"id": "m1"}) is False
        await _run_while_waiting(rt)
        assert await rt.deliver("r1", "reply", "m1", {"id": "m1"}) is False  # a late retry
        assert await rt.deliver("r1", "reply", "m2", {"id": "m2"}) is True
        await rt.run_until_idle()
        run = await rt.store.get_run("r1")
        assert run is not None and run.result == ["m1", "m2"], run
        assert handled == ["m1", "m2"]
        assert [m.message_id for m in await rt.store.list_messages("r1")] == ["m1", "m2"]

    asyncio.run(go())


async def _run_while_waiting(rt: Runtime) -> None:
    """Execute ready runs until they wait again, without moving time to their timers."""

    class Stop(Exception):
        pass

    class StopWhenWaiting:
        async def next_due(self) -> datetime | None:
            raise Stop

        async def act(self, now: datetime) -> int:
            return 0

    rt.actors.append(StopWhenWaiting())
    try:
        await rt.run_until_idle()
    except Stop:
        pass
    finally:
        rt.actors.pop()


def test_a_topic_consumer_that_crashes_redelivers_into_the_inbox_and_the_run_handles_once(
        tmp_path: Path) -> None:
    """A consumer forwards replies from a topic into a run's inbox and dies after
    forwarding two of three, before committing its offset; its restart forwards all three
    again (at least once), the inbox dedupes by message id, and the run handles each
    reply exactly once."""
    handled: list[str] = []
    rt = inbox_runtime(tmp_path, handled)
    forward = deliver_to_runs(rt, lambda d: "r1", "reply")
    crashed = False

    async def crash_after_two(delivery: Delivery) -> None:
        nonlocal crashed
        await forward(delivery)
        if delivery.offset == 2 and not crashed:
            crashed = True
            raise CrashInjected("after forwarding 2")

    async def go() -> None:
        await rt.start("replies", {}, run_id="r1")
        replies = Topic(rt.store, "replies", clock=rt.clock)
        for i in range(1, 4):
            await replies.publish({"id": f"m{i}"}, key="r1")
        first = Consumer(rt.store, replies, "forwarder", crash_after_two, owner="w1")
        with pytest.raises(CrashInjected):
            await first.run()
        assert (await first.position()).offset == 0  # nothing committed
        again = Consumer(rt.store, replies, "forwarder", crash_after_two, owner="w1")
        assert await again.run() == 3
        await rt.run_until_idle()
        run = await rt.store.get_run("r1")
        assert run is not None and run.result == ["m1", "m2", "m3"], run
        assert handled == ["m1", "m2", "m3"]
        ids = [m.message_id for m in await rt.store.list_messages("r1")]
        assert ids == ["replies/1/forwarder", "replies/2/forwarder", "replies/3/forwarder"]

    asyncio.run(go())
