"""P3, event-driven sequencing: ordered durable topics stamped with provenance, consumers
with durable offsets that survive a real crash without duplicate effects, deterministic
replay from offset 0, declared lateness policies, and the ``threshold topics`` CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from procs.topic_consumer import sink_rows
from threshold import ModelRegistry, Prompt, RunContext, Runtime, ScriptedModel, VirtualClock
from threshold import open_store as open_url
from threshold.boundary import Boundary
from threshold.cli._main import main as cli
from threshold.clock import DEFAULT_EPOCH, to_iso
from threshold.errors import ConfigError, ConsumerFailed, UsageError
from threshold.patterns.topics import (
    LATE_KIND,
    Consumer,
    Delivery,
    LatenessPolicy,
    Outgoing,
    Topic,
    side_topic,
    start_runs,
)
from threshold.runtime import Crossing
from threshold.store import Store

HERE = Path(__file__).parent


def sqlite(tmp_path: Path, name: str = "topics.db") -> Store:
    return open_url(f"sqlite:///{tmp_path / name}")


def at(minutes: float) -> str:
    return to_iso(DEFAULT_EPOCH + timedelta(minutes=minutes))


def test_publish_appends_in_order_with_producer_event_time_and_headers(tmp_path: Path) -> None:
    """Offsets are 1, 2, 3 in publish order, per topic; each event keeps its key, payload,
    producer, event time and headers; publish_many appends a batch in order."""

    async def go() -> None:
        store = sqlite(tmp_path)
        orders = Topic(store, "orders", clock=VirtualClock())
        assert await orders.publish({"n": 1}, key="c1", producer="shop",
                                    event_time=at(5), headers={"v": "2"}) == 1
        assert await orders.publish({"n": 2}, key="c2", producer="shop") == 2
        assert await Topic(store, "other").publish({"n": 0}) == 1
        offsets = await orders.publish_many([Outgoing({"n": i}, key=f"c{i}") for i in (3, 4, 5)],
                                            producer="batch")
        assert offsets == [3, 4, 5]
        events = await orders.read()
        assert [e.payload["n"] for e in events] == [1, 2, 3, 4, 5]
        first = events[0]
        assert (first.key, first.event_time, first.headers) == (
            "c1", at(5), {"producer": "shop", "v": "2"})
        assert events[1].event_time == to_iso(DEFAULT_EPOCH)  # the topic clock's now
        assert await orders.last_offset() == 5
        assert [e.offset for e in await orders.tail(2)] == [4, 5]
        with pytest.raises(ConfigError):
            Topic(store, "has space")

    asyncio.run(go())


class Forecast(BaseModel):
    churn_risk: int


def test_an_llm_produced_event_carries_its_producer_model_version_and_prompt_hash(
        tmp_path: Path) -> None:
    """publish_crossing stamps the event with the model id and version and the prompt id,
    version and hash of the exact proposal committed; an uncommitted crossing is refused."""
    prompt = Prompt("forecast", "3", "Risk for {c}?")
    boundary: Boundary[Any] = Boundary("forecast", output=Forecast, prompt=prompt)
    models = ModelRegistry()
    models.add("scripted", ScriptedModel(['{"churn_risk": 70}', "not json at all"],
                                         repeat_last=True, version="2026-05"))
    rt = Runtime(sqlite(tmp_path), clock=VirtualClock(), models=models,
                 default_model="scripted")
    topic = Topic(rt.store, "forecasts", clock=rt.clock)

    @rt.agent("forecaster")
    async def forecaster(ctx: RunContext, inp: dict[str, Any]) -> int:
        crossing = await ctx.cross(boundary, {"c": inp["c"]})
        return await ctx.effect("publish", lambda e: topic.publish_crossing(
            crossing, producer="forecaster", key=inp["c"], dedupe_key=e.key,
            check_existing=e.performed > 0))

    async def go() -> None:
        await rt.start("forecaster", {"c": "c1"}, run_id="f1")
        await rt.run_until_idle()
        [event] = await topic.read()
        assert event.payload == {"churn_risk": 70}
        h = event.headers
        assert (h["producer"], h["model_id"], h["model_version"]) == (
            "forecaster", "scripted:scripted", "2026-05")
        assert (h["prompt_id"], h["prompt_version"], h["prompt_hash"]) == (
            "forecast", "3", prompt.hash)
        assert h["crossing_id"] == "f1/1" and h["proposal_hash"]
        aborted: Crossing[Any] = Crossing("forecast", "aborted", 3)
        with pytest.raises(UsageError, match="only committed proposals"):
            await topic.publish_crossing(aborted, producer="forecaster")

    asyncio.run(go())


def spawn_consumer(db: Path, sink: Path, crash: str | None = None) -> subprocess.CompletedProcess[
        str]:
    args = [sys.executable, "-m", "procs.topic_consumer", str(db), str(sink)]
    if crash:
        args += ["--crash", crash]
    return subprocess.run(args, cwd=HERE, capture_output=True, text=True, timeout=120)


async def publish_orders(db: Path, n: int) -> None:
    store = open_url(f"sqlite:///{db}")
    await Topic(store, "orders").publish_many(
        Outgoing({"amount": i}, key=f"o{i}") for i in range(1, n + 1))
    await store.close()


def test_a_consumer_killed_after_recording_an_effect_but_before_its_offset_redelivers_with_no_duplicate(  # noqa: E501
        tmp_path: Path) -> None:
    """A consumer process dies (os._exit) mid-batch, right after its third effect was
    recorded and before the batch's offset was committed; the next process gets the batch
    again, performs only the effects not yet recorded, and every order is billed once."""
    db, sink = tmp_path / "t.db", tmp_path / "sink.db"
    asyncio.run(publish_orders(db, 10))
    crashed = spawn_consumer(db, sink, "after_record:3")
    assert crashed.returncode == 137, crashed.stderr
    assert len(sink_rows(sink)) == 3
    done = spawn_consumer(db, sink)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["processed"], out["offset"]) == (10, 10)  # redelivered the whole batch
    rows = sink_rows(sink)
    assert sorted(k for k, _, _ in rows) == sorted(f"orders/{i}/biller/bill" for i in
                                                   range(1, 11))
    assert all(performed == 0 for _, performed, _ in rows)
    assert out["state"]["billed"] == sum(range(1, 11))  # state: exactly once as well


def test_a_consumer_killed_between_an_effect_and_its_record_repeats_it_with_the_same_key(
        tmp_path: Path) -> None:
    """The one window no record closes: a death after the effect ran and before it was
    recorded repeats that one effect on redelivery, with the same idempotency key and
    performed=1, so the receiving system can dedupe it; nothing else repeats."""
    db, sink = tmp_path / "t.db", tmp_path / "sink.db"
    asyncio.run(publish_orders(db, 5))
    assert spawn_consumer(db, sink, "after_effect:3").returncode == 137
    done = spawn_consumer(db, sink)
    assert done.returncode == 0, done.stderr
    rows = sink_rows(sink)
    keys = [k for k, _, _ in rows]
    assert keys == [f"orders/{i}/biller/bill" for i in (1, 2, 3, 3, 4, 5)]
    assert [p for _, p, _ in rows] == [0, 0, 0, 1, 0, 0]
    assert json.loads(done.stdout)["state"]["billed"] == 15


async def score(delivery: Delivery) -> None:
    """A deterministic consumer: a running total per customer, published as it changes."""
    totals = delivery.state
    key = delivery.event.key or "?"
    totals[key] = totals.get(key, 0) + delivery.payload["amount"]
    await delivery.publish(f"scores.{delivery.consumer}", {"customer": key,
                                                           "total": totals[key]}, key=key)


def test_replaying_a_topic_from_offset_zero_reproduces_the_same_outputs(tmp_path: Path) -> None:
    """A deterministic consumer replayed from offset 0 under a new name computes the same
    output events (payloads, keys, event times) and the same state; resetting the
    original consumer to 0 recomputes its state without publishing anything twice."""

    async def go() -> None:
        store = sqlite(tmp_path)
        orders = Topic(store, "orders", clock=VirtualClock())
        for i in range(30):
            await orders.publish({"amount": i * 7 % 11}, key=f"c{i % 4}", event_time=at(i))
        live = Consumer(store, orders, "live", score, initial_state={}, batch_size=7)
        assert await live.run() == 30
        replay = Consumer(store, orders, "replay", score, initial_state={}, batch_size=4)
        assert await replay.run() == 30

        def outputs(events: list[Any]) -> list[tuple[Any, ...]]:
            return [(e.key, e.payload, e.event_time) for e in events]

        live_out = await Topic(store, "scores.live").read()
        replay_out = await Topic(store, "scores.replay").read()
        assert len(live_out) == 30 and outputs(live_out) == outputs(replay_out)
        assert (await live.position()).state == (await replay.position()).state
        state = (await live.position()).state
        await live.reset(0)
        assert await live.run() == 30
        assert (await live.position()).state == state
        assert len(await Topic(store, "scores.live").read()) == 30  # no second publish

    asyncio.run(go())


LATE_TIMES = [10, 20, 30, 27, 5, 31]  # 27: out of order but within 5 min; 5: late


async def run_with_policy(store: Store, policy: LatenessPolicy, name: str) -> tuple[
        list[int], Consumer]:
    topic = Topic(store, "readings")
    if await topic.last_offset() == 0:
        for minute in LATE_TIMES:
            await topic.publish({"minute": minute}, key="m1", event_time=at(minute))
    handled: list[int] = []

    async def handle(delivery: Delivery) -> None:
        handled.append(delivery.payload["minute"] if not delivery.late
                       else -delivery.payload["minute"])

    consumer = Consumer(store, topic, name, handle, lateness=policy, batch_size=2)
    await consumer.run()
    return handled, consumer


@pytest.mark.parametrize("action", ["process", "drop", "side_topic"])
def test_late_events_follow_the_declared_policy_and_the_decision_is_recorded(
        tmp_path: Path, action: str) -> None:
    """With event time and 5 minutes of allowed lateness, an event 25 minutes behind the
    watermark is late, one 3 minutes out of order is not; the late one is processed
    (flagged), dropped or sent to <topic>.late as declared, and the decision is recorded
    once with a topic.late journal event."""

    async def go() -> None:
        store = sqlite(tmp_path)
        policy = LatenessPolicy("event", timedelta(minutes=5), action)  # type: ignore[arg-type]
        handled, consumer = await run_with_policy(store, policy, f"c-{action}")
        expected = {"process": [10, 20, 30, 27, -5, 31], "drop": [10, 20, 30, 27, 31],
                    "side_topic": [10, 20, 30, 27, 31]}[action]
        assert handled == expected
        [note] = await store.list_events(kind=LATE_KIND)
        assert (note.data["offset"], note.data["action"]) == (5, action)
        assert note.data["watermark"] == at(25)
        side = await Topic(store, side_topic("readings")).read()
        assert [e.payload["minute"] for e in side] == ([5] if action == "side_topic" else [])
        if side:
            assert side[0].event_time == at(5) and side[0].headers["source_offset"] == 5
        pos = await consumer.position()
        assert pos.late == {action: 1} and pos.policy["on_late"] == action
        # a replay reaches the same decision and does not record it twice
        await consumer.reset(0)
        await consumer.run()
        assert len(await store.list_events(kind=LATE_KIND)) == 1
        assert len(await Topic(store, side_topic("readings")).read()) == len(side)

    asyncio.run(go())


def test_processing_time_makes_nothing_late(tmp_path: Path) -> None:
    """Under processing time the log's order is the time order: the same events are all
    handled as on time and no lateness decision is recorded."""

    async def go() -> None:
        store = sqlite(tmp_path)
        handled, _ = await run_with_policy(store, LatenessPolicy("processing", on_late="drop"),
                                           "by-arrival")
        assert handled == LATE_TIMES
        assert await store.list_events(kind=LATE_KIND) == []

    asyncio.run(go())


def test_a_failing_handler_commits_nothing_of_its_batch_and_the_batch_comes_back(
        tmp_path: Path) -> None:
    """A handler that raises on offset 3 fails the poll with ConsumerFailed naming the
    offset; the offset stays where it was, and once the fault clears the batch is
    delivered again with offsets 1-2's effects not repeated."""
    calls: list[int] = []
    broken = True

    async def handle(delivery: Delivery) -> None:
        async def note(effect: Any) -> int:
            calls.append(delivery.offset)
            return delivery.offset

        await delivery.effect("note", note)
        if delivery.offset == 3 and broken:
            raise RuntimeError("downstream is down")

    async def go() -> None:
        nonlocal broken
        store = sqlite(tmp_path)
        topic = Topic(store, "t")
        await topic.publish_many(Outgoing({"i": i}) for i in range(5))
        consumer = Consumer(store, topic, "c", handle)
        with pytest.raises(ConsumerFailed) as failed:
            await consumer.run()
        assert failed.value.offset == 3
        assert (await consumer.position()).offset == 0
        broken = False
        assert await consumer.run() == 5
        assert calls == [1, 2, 3, 4, 5]

    asyncio.run(go())


def test_a_second_live_instance_stays_idle_until_the_lease_frees(tmp_path: Path) -> None:
    """Two instances of one consumer: while the first holds a live lease the second
    processes nothing; once the lease expires the second takes over from the committed
    offset and nothing is handled twice."""
    lease_clock = VirtualClock(datetime(2030, 1, 1))
    seen: list[tuple[str, int]] = []

    def handler(who: str) -> Any:
        async def handle(delivery: Delivery) -> None:
            seen.append((who, delivery.offset))
        return handle

    async def go() -> None:
        store = sqlite(tmp_path)
        topic = Topic(store, "t")
        await topic.publish_many(Outgoing({"i": i}) for i in range(4))
        a = Consumer(store, topic, "c", handler("a"), batch_size=2, lease_clock=lease_clock,
                     owner="host-a:1:a", lease_seconds=30)
        b = Consumer(store, topic, "c", handler("b"), batch_size=2, lease_clock=lease_clock,
                     owner="host-b:2:b", lease_seconds=30)
        assert await a.poll() == 2
        assert await b.poll() == 0
        lease_clock.advance(seconds=31)
        assert await b.run() == 2
        assert await a.poll() == 0  # b holds the lease now
        assert seen == [("a", 1), ("a", 2), ("b", 3), ("b", 4)]

    asyncio.run(go())


def test_an_llm_backed_consumer_starts_one_run_per_event_even_when_redelivered(
        tmp_path: Path) -> None:
    """start_runs hands each event to a run of an agent; run ids derive from (consumer,
    topic, offset), so replaying the topic starts no second run."""
    rt = Runtime(sqlite(tmp_path), clock=VirtualClock())

    @rt.agent("triage")
    async def triage(ctx: RunContext, inp: dict[str, Any]) -> str:
        return str(inp["ticket"])

    async def go() -> None:
        topic = Topic(rt.store, "tickets")
        await topic.publish_many(Outgoing({"ticket": f"T{i}"}) for i in range(3))
        consumer = Consumer(rt.store, topic, "triager", start_runs(rt, "triage"))
        await consumer.run()
        await consumer.reset(0)
        await consumer.run()
        runs = await rt.store.list_runs()
        assert sorted(r.run_id for r in runs) == [f"triager:tickets:{i}" for i in (1, 2, 3)]
        await rt.run_until_idle()
        assert {r.result for r in await rt.store.list_runs()} == {"T0", "T1", "T2"}

    asyncio.run(go())


def test_the_topics_cli_lists_topics_with_consumer_lag_and_tails_events(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`threshold topics list` shows each topic's last offset and each consumer's offset
    and lag; `threshold topics tail TOPIC -n 2` shows the last two events; an unknown
    topic is a clear error."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    async def setup() -> None:
        store = open_url(url)
        topic = Topic(store, "orders")
        await topic.publish_many(Outgoing({"i": i}, key=f"k{i}") for i in range(5))

        async def noop(delivery: Delivery) -> None:
            return None

        await Consumer(store, topic, "slow", noop, batch_size=3).poll()
        await store.close()

    asyncio.run(setup())
    assert cli(["topics", "list", "--db", url, "--json"]) == 0
    [info] = json.loads(capsys.readouterr().out)
    assert (info["name"], info["last_offset"]) == ("orders", 5)
    assert [(c["name"], c["offset"], c["lag"]) for c in info["consumers"]] == [("slow", 3, 2)]
    assert cli(["topics", "list", "--db", url]) == 0
    assert "consumer slow" in capsys.readouterr().out
    assert cli(["topics", "tail", "orders", "-n", "2", "--db", url, "--json"]) == 0
    assert [e["offset"] for e in json.loads(capsys.readouterr().out)] == [4, 5]
    assert cli(["topics", "tail", "orders", "-n", "1", "--db", url]) == 0
    assert "key=k4" in capsys.readouterr().out
    assert cli(["topics", "tail", "nope", "--db", url]) == 2
    assert "no topic 'nope'" in capsys.readouterr().err
