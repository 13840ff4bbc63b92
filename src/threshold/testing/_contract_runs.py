"""Contract checks for coordination: runs, leases, wake-ups, steps, timers and the inbox."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from threshold.errors import StoreError
from threshold.store import (
    AttemptRecord,
    CrossingRecord,
    EventRecord,
    MessageRecord,
    RunRecord,
    StepRecord,
    TimerRecord,
)
from threshold.testing._contract_base import (
    ContractTarget,
    at,
    check,
    equal,
    expect,
    handles,
    raises,
    run,
)

LEASE = at(3600)


async def _status(target: ContractTarget, run_id: str) -> str | None:
    record = await target.store.get_run(run_id)
    return None if record is None else record.status


# runs ------------------------------------------------------------------------------------
@check
async def check_create_run_is_idempotent(target: ContractTarget) -> None:
    """Creating a run twice keeps the first; the record reads back exactly as written."""
    store = target.store
    first = run("r1", input={"name": "Zoë", "values": [1, 2.5, None, True, {"k": "v"}]},
                seed=2**40, pins={"model": "sim:v1", "agent_version": "1"},
                parent_run_id="parent-0")
    equal(await store.create_run(first), True, "first create_run")
    equal(await store.create_run(replace(first, agent="other", seed=1)), False,
          "second create_run of the same run_id")
    equal(await store.get_run("r1"), first, "stored run")
    equal(await store.get_run("missing"), None, "get_run of an unknown id")


@check
async def check_runs_list_filter_and_count(target: ContractTarget) -> None:
    """Runs list in (created_at, run_id) order, filter by status and agent, and count."""
    store = target.store
    for record in (run("b", created=2), run("a", created=1, agent="x"),
                   run("c", created=1, status="waiting"), run("d", created=3, status="waiting")):
        await store.create_run(record)
    equal([r.run_id for r in await store.list_runs()], ["a", "c", "b", "d"], "list order")
    equal([r.run_id for r in await store.list_runs(status="waiting")], ["c", "d"], "by status")
    equal([r.run_id for r in await store.list_runs(agent="x")], ["a"], "by agent")
    equal([r.run_id for r in await store.list_runs(limit=2)], ["a", "c"], "limit")
    equal(await store.count_runs(), {"ready": 2, "waiting": 2}, "count_runs")


@check
async def check_claim_leases_ready_runs_only(target: ContractTarget) -> None:
    """claim_runs leases ready runs oldest first, up to the limit; never waiting, finished
    or already leased ones."""
    store = target.store
    for record in (run("r1", created=1), run("r2", created=2), run("r3", created=3),
                   run("w", status="waiting"), run("done", status="completed")):
        await store.create_run(record)
    got = await store.claim_runs("A", now=at(10), lease_until=LEASE, limit=2, dead_owners=[])
    equal([r.run_id for r in got], ["r1", "r2"], "first claim")
    for r in got:
        equal((r.status, r.lease_owner, r.lease_until), ("running", "A", LEASE),
              f"claimed run {r.run_id}")
    got = await store.claim_runs("B", now=at(10), lease_until=LEASE, limit=10, dead_owners=[])
    equal([r.run_id for r in got], ["r3"], "second claim")
    equal(await store.claim_runs("C", now=at(10), lease_until=LEASE, limit=10,
                                 dead_owners=[]), [], "third claim")
    stored = await store.get_run("r1")
    expect(stored is not None and stored.lease_owner == "A", "r1 is leased to A")


@check
async def check_claim_takes_only_served_agent_versions(target: ContractTarget) -> None:
    """With ``agents``, a worker claims only runs of those (agent, version) pairs, fresh or
    with an expired lease; runs of other versions stay for the workers that deploy them."""
    store = target.store
    await store.create_run(run("x1", created=1, agent="x"))
    await store.create_run(run("y1", created=2, agent="y"))
    await store.create_run(replace(run("x2", created=3, agent="x"), agent_version="2"))
    got = await store.claim_runs("A", now=at(0), lease_until=at(10), limit=10,
                                 dead_owners=[], agents=[("x", "2"), ("z", "1")])
    equal([r.run_id for r in got], ["x2"], "claim of x version 2")
    equal(await store.claim_runs("B", now=at(20), lease_until=at(30), limit=10,
                                 dead_owners=[], agents=[("y", "2")]), [],
          "claim of a version no run has, with x2's lease expired")
    got = await store.claim_runs("B", now=at(20), lease_until=at(30), limit=10,
                                 dead_owners=[], agents=[("x", "1"), ("x", "2")])
    equal(sorted(r.run_id for r in got), ["x1", "x2"], "claim of x, taking x2 over")
    equal(await store.claim_runs("C", now=at(20), lease_until=at(30), limit=10,
                                 dead_owners=[], agents=[]), [], "claim serving nothing")
    got = await store.claim_runs("C", now=at(20), lease_until=at(30), limit=10,
                                 dead_owners=[])
    equal([r.run_id for r in got], ["y1"], "claim without a filter")


@check
async def check_claim_takes_expired_leases(target: ContractTarget) -> None:
    """A running run whose lease has expired is claimed again by another worker."""
    store = target.store
    await store.create_run(run("r1"))
    await store.claim_runs("A", now=at(0), lease_until=at(10), limit=1, dead_owners=[])
    equal(await store.claim_runs("B", now=at(5), lease_until=at(20), limit=1, dead_owners=[]),
          [], "claim while the lease holds")
    got = await store.claim_runs("B", now=at(11), lease_until=at(20), limit=1, dead_owners=[])
    equal([(r.run_id, r.lease_owner) for r in got], [("r1", "B")], "claim after expiry")


@check
async def check_claim_takes_runs_of_dead_owners(target: ContractTarget) -> None:
    """A run leased by an owner named dead is claimed at once, lease or not."""
    store = target.store
    await store.create_run(run("r1"))
    await store.claim_runs("A", now=at(0), lease_until=LEASE, limit=1, dead_owners=[])
    equal(await store.claim_runs("B", now=at(1), lease_until=LEASE, limit=1,
                                 dead_owners=["Z"]), [], "claim naming another owner dead")
    got = await store.claim_runs("B", now=at(1), lease_until=LEASE, limit=1,
                                 dead_owners=["A", "Z"])
    equal([(r.run_id, r.lease_owner) for r in got], [("r1", "B")], "claim from dead A")


@check
async def check_concurrent_claims_are_disjoint(target: ContractTarget) -> None:
    """Workers claiming at once never lease the same run twice, and together take all."""
    store = target.store
    for i in range(30):
        await store.create_run(run(f"r{i:02d}", created=i))
    async with handles(target, 5) as stores:
        batches = await asyncio.gather(*(
            s.claim_runs(f"w{i}", now=at(100), lease_until=LEASE, limit=8, dead_owners=[])
            for i, s in enumerate(stores)))
    claimed = [(r.run_id, f"w{i}") for i, batch in enumerate(batches) for r in batch]
    ids = [run_id for run_id, _ in claimed]
    equal(len(ids), len(set(ids)), "runs claimed by concurrent workers (duplicates?)")
    for run_id, owner in claimed:
        stored = await store.get_run(run_id)
        equal(None if stored is None else stored.lease_owner, owner, f"owner of {run_id}")
    rest = await store.claim_runs("late", now=at(100), lease_until=LEASE, limit=100,
                                  dead_owners=[])
    equal(sorted(ids + [r.run_id for r in rest]), [f"r{i:02d}" for i in range(30)],
          "every run claimed exactly once")


@check
async def check_lease_owners_and_renewal(target: ContractTarget) -> None:
    """lease_owners names the holders; renewing a lease keeps other workers off the run."""
    store = target.store
    for i in range(3):
        await store.create_run(run(f"r{i}", created=i))
    await store.claim_runs("A", now=at(0), lease_until=at(10), limit=2, dead_owners=[])
    await store.claim_runs("B", now=at(0), lease_until=at(10), limit=1, dead_owners=[])
    equal(sorted(await store.lease_owners()), ["A", "B"], "lease owners")
    equal(await store.renew_leases("A", lease_until=at(50)), 2, "runs renewed for A")
    equal(await store.renew_leases("nobody", lease_until=at(50)), 0, "runs renewed for nobody")
    got = await store.claim_runs("C", now=at(20), lease_until=at(60), limit=10, dead_owners=[])
    equal([(r.run_id, r.lease_owner) for r in got], [("r2", "C")], "claim after B expired")


@check
async def check_release_returns_run_to_ready(target: ContractTarget) -> None:
    """Only the lease owner can give a run back; then it is ready and claimable."""
    store = target.store
    await store.create_run(run("r1"))
    await store.claim_runs("A", now=at(0), lease_until=LEASE, limit=1, dead_owners=[])
    await store.release_run("r1", "B")
    equal(await _status(target, "r1"), "running", "status after a stranger's release")
    await store.release_run("r1", "A")
    stored = await store.get_run("r1")
    expect(stored is not None and (stored.status, stored.lease_owner) == ("ready", None),
           f"released run is ready and unleased, found {stored}")
    got = await store.claim_runs("B", now=at(1), lease_until=LEASE, limit=1, dead_owners=[])
    equal([r.run_id for r in got], ["r1"], "claim after release")


@check
async def check_finish_run_is_terminal(target: ContractTarget) -> None:
    """A finished run keeps its result or error, drops its lease and is never claimed."""
    store = target.store
    await store.create_run(run("ok"))
    await store.create_run(run("bad", created=1))
    await store.claim_runs("A", now=at(0), lease_until=LEASE, limit=2, dead_owners=[])
    await store.finish_run("ok", status="completed", now=at(5), result={"offer": [1, "x"]})
    await store.finish_run("bad", status="failed", now=at(6), error="ValueError: boom")
    ok, bad = await store.get_run("ok"), await store.get_run("bad")
    assert ok is not None and bad is not None
    equal((ok.status, ok.result, ok.lease_owner, ok.lease_until, ok.updated_at),
          ("completed", {"offer": [1, "x"]}, None, None, at(5)), "completed run")
    equal((bad.status, bad.error), ("failed", "ValueError: boom"), "failed run")
    equal(await store.claim_runs("B", now=at(9999), lease_until=LEASE, limit=9,
                                 dead_owners=["A"]), [], "claim of finished runs")


@check
async def check_suspend_then_wake(target: ContractTarget) -> None:
    """A suspended run waits unclaimed until woken, once; then it is ready again."""
    store = target.store
    await store.create_run(run("r1"))
    await store.claim_runs("A", now=at(0), lease_until=LEASE, limit=1, dead_owners=[])
    await store.suspend_run("r1", owner="A", now=at(1))
    stored = await store.get_run("r1")
    expect(stored is not None and (stored.status, stored.lease_owner) == ("waiting", None),
           f"suspended run waits unleased, found {stored}")
    equal(await store.claim_runs("B", now=at(2), lease_until=LEASE, limit=1, dead_owners=[]),
          [], "claim of a waiting run")
    equal(await store.wake_run("r1", now=at(3)), True, "first wake")
    equal(await _status(target, "r1"), "ready", "status after wake")
    equal(await store.wake_run("r1", now=at(4)), False, "second wake")
    got = await store.claim_runs("B", now=at(5), lease_until=LEASE, limit=1, dead_owners=[])
    equal([r.run_id for r in got], ["r1"], "claim after wake")


@check
async def check_wake_while_running_makes_suspension_ready(target: ContractTarget) -> None:
    """A wake that arrives while the run executes is not lost: its suspension becomes
    'ready' instead of 'waiting', and the mark is used up by that one suspension."""
    store = target.store
    await store.create_run(run("r1"))
    await store.claim_runs("A", now=at(0), lease_until=LEASE, limit=1, dead_owners=[])
    equal(await store.wake_run("r1", now=at(1)), False, "wake of a running run")
    await store.suspend_run("r1", owner="A", now=at(2))
    equal(await _status(target, "r1"), "ready", "suspension after a wake")
    await store.claim_runs("A", now=at(3), lease_until=LEASE, limit=1, dead_owners=[])
    await store.suspend_run("r1", owner="A", now=at(4))
    equal(await _status(target, "r1"), "waiting", "the next suspension")


@check
async def check_concurrent_wake_and_suspend_lose_nothing(target: ContractTarget) -> None:
    """Racing a wake against a suspension always leaves the run ready, never asleep."""
    store = target.store
    async with handles(target, 2) as (waker, sleeper):
        for i in range(10):
            run_id = f"r{i}"
            await store.create_run(run(run_id, created=i))
            await store.claim_runs("A", now=at(i), lease_until=LEASE, limit=1, dead_owners=[])
            await asyncio.gather(waker.wake_run(run_id, now=at(i)),
                                 sleeper.suspend_run(run_id, owner="A", now=at(i)))
            equal(await _status(target, run_id), "ready", f"{run_id} after wake+suspend race")


@check
async def check_suspend_by_another_owner_is_ignored(target: ContractTarget) -> None:
    """A worker that lost a run's lease cannot suspend it under the new owner."""
    store = target.store
    await store.create_run(run("r1"))
    await store.claim_runs("A", now=at(0), lease_until=LEASE, limit=1, dead_owners=[])
    await store.suspend_run("r1", owner="B", now=at(1))
    stored = await store.get_run("r1")
    expect(stored is not None and (stored.status, stored.lease_owner) == ("running", "A"),
           f"run stays with A, found {stored}")


@check
async def check_set_run_pins(target: ContractTarget) -> None:
    """Pins are replaced as a whole and read back."""
    store = target.store
    await store.create_run(run("r1", pins={"model": "sim:v1"}))
    await store.set_run_pins("r1", {"model": "sim:v2", "policy": "3"}, now=at(9))
    stored = await store.get_run("r1")
    equal(None if stored is None else stored.pins, {"model": "sim:v2", "policy": "3"}, "pins")


# steps -----------------------------------------------------------------------------------
@check
async def check_steps_unique_per_run_and_seq(target: ContractTarget) -> None:
    """A step position is written once: a second, different step there is a StoreError."""
    store = target.store
    s1 = StepRecord("r1", 1, "step", "lookup", {"rows": [1, 2]}, at(1))
    s2 = StepRecord("r1", 2, "timer", "sleep", None, at(2))
    s3 = StepRecord("r1", 3, "step", "list", [None, "ü"], at(3))
    for s in (s2, s1, s3, StepRecord("r2", 1, "event", "other", {}, at(1))):
        await store.record_step(s)
    equal(await store.load_steps("r1"), {1: s1, 2: s2, 3: s3}, "steps of r1")
    await raises(store.record_step(StepRecord("r1", 2, "step", "else", 1, at(4))), StoreError,
                 "a second step at position 2")
    equal(await store.load_steps("r1"), {1: s1, 2: s2, 3: s3}, "steps after the conflict")
    equal(list(await store.load_steps("nobody")), [], "steps of an unknown run")


@check
async def check_journal_head_reports_last_step_and_open_crossings(
        target: ContractTarget) -> None:
    """journal_head gives the last step position, the number of steps and the positions of
    the run's crossings that began but did not finish (open or escalated)."""
    store = target.store
    equal(await store.journal_head("r1"), (0, 0, []), "head of a run with no journal")
    for seq in (1, 2, 4):
        await store.record_step(StepRecord("r1", seq, "step", f"s{seq}", seq, at(seq)))
    for seq, status in ((3, "open"), (5, "escalated"), (2, "committed"), (6, "open")):
        run_id = "r1" if seq != 6 else "r10"  # r10 shares r1's prefix, not its crossings
        crossing = CrossingRecord(f"{run_id}/{seq}", run_id, seq, "b", "1", "act", [],
                                  status, 1, at(seq), "sim:v1", "p", "1")
        await store.save_attempt(crossing, AttemptRecord(crossing.crossing_id, 1,
                                                         "transport_error", at(seq)), (), None)
    equal(await store.journal_head("r1"), (4, 3, [3, 5]), "head of r1")


# timers ----------------------------------------------------------------------------------
@check
async def check_timers_fire_once_when_due(target: ContractTarget) -> None:
    """A timer fires once, at or after its time, and wakes its run; cancelled ones never."""
    store = target.store
    await store.create_run(run("r1", status="waiting"))
    t1 = TimerRecord("r1/1", "r1", at(10), "sleep")
    t2 = TimerRecord("r1/2", "r1", at(20), "reminder")
    await store.add_timer(t1)
    await store.add_timer(t2)
    await store.add_timer(replace(t1, fire_at=at(99)))  # adding is idempotent by id
    equal(await store.get_timer("r1/1"), t1, "stored timer")
    equal(await store.next_timer_at(), at(10), "next timer")
    equal(await store.fire_due_timers(at(9)), [], "fire before due")
    fired = await store.fire_due_timers(at(10))
    equal(fired, [replace(t1, status="fired", fired_at=at(10))], "fire when due")
    equal(await _status(target, "r1"), "ready", "run after its timer fired")
    equal(await store.fire_due_timers(at(15)), [], "fire again")
    equal(await store.next_timer_at(), at(20), "next timer after firing")
    equal([t.timer_id for t in await store.list_timers("r1", status="fired")], ["r1/1"],
          "fired timers of r1")
    await store.cancel_timer("r1/2")
    equal(await store.fire_due_timers(at(30)), [], "fire a cancelled timer")
    equal(await store.next_timer_at(), None, "next timer when none is pending")
    equal([(t.timer_id, t.status) for t in await store.list_timers()],
          [("r1/1", "fired"), ("r1/2", "cancelled")], "all timers")


@check
async def check_guarded_timers_lapse_when_version_moved(target: ContractTarget) -> None:
    """A guarded timer fires only if its record is still at the guarded version; otherwise
    it lapses (and still wakes its run, so the waiting code sees the lapse)."""
    store = target.store
    for run_id in ("r1", "r2", "r3"):
        await store.create_run(run(run_id, status="waiting"))
    await store.cas_record("renewal", "c1", expected_version=0, value={"s": "a"}, now=at(0))
    await store.cas_record("ns", "a/b", expected_version=0, value=1, now=at(0))
    for t in (TimerRecord("g1", "r1", at(10), "sla", guard_key="renewal/c1", guard_version=1),
              TimerRecord("g2", "r2", at(20), "sla", guard_key="renewal/c1", guard_version=1),
              TimerRecord("g3", "r3", at(20), "sla", guard_key="ns/a/b", guard_version=1),
              TimerRecord("g4", "r2", at(20), "sla", guard_key="renewal/none",
                          guard_version=1)):
        await store.add_timer(t)
    equal([(t.timer_id, t.status) for t in await store.fire_due_timers(at(10))],
          [("g1", "fired")], "guard still at its version")
    await store.cas_record("renewal", "c1", expected_version=1, value={"s": "b"}, now=at(12))
    fired = {t.timer_id: t.status for t in await store.fire_due_timers(at(20))}
    equal(fired, {"g2": "lapsed", "g3": "fired", "g4": "lapsed"}, "guards after the move")
    equal([await _status(target, r) for r in ("r1", "r2", "r3")], ["ready"] * 3,
          "runs woken by fired and lapsed timers")
    equal((await store.get_timer("g2")), TimerRecord(
        "g2", "r2", at(20), "sla", "lapsed", "renewal/c1", 1, at(20)), "stored lapsed timer")


@check
async def check_concurrent_timer_firing_fires_each_once(target: ContractTarget) -> None:
    """Workers firing due timers at once fire each timer exactly once between them."""
    store = target.store
    for r in range(5):
        await store.create_run(run(f"r{r}", status="waiting", created=r))
        for i in range(4):
            await store.add_timer(TimerRecord(f"r{r}/{i}", f"r{r}", at(i), "sleep"))
    async with handles(target, 4) as stores:
        batches = await asyncio.gather(*(s.fire_due_timers(at(10)) for s in stores))
    ids = [t.timer_id for batch in batches for t in batch]
    equal(sorted(ids), sorted(f"r{r}/{i}" for r in range(5) for i in range(4)),
          "timers fired by concurrent workers")
    equal((await store.count_runs()).get("ready"), 5, "runs woken")


# inbox -----------------------------------------------------------------------------------
@check
async def check_deliver_is_idempotent_by_message_id(target: ContractTarget) -> None:
    """A message id is delivered once; delivery wakes the run; messages are read in order
    per channel and consumed together with the step that read them."""
    store = target.store
    await store.create_run(run("r1", status="waiting"))
    m1 = MessageRecord("r1", "m1", "reply", {"text": "yes"}, at(1))
    m2 = MessageRecord("r1", "m2", "reply", {"text": "later"}, at(2))
    equal(await store.deliver(m1, now=at(1)), True, "first delivery")
    equal(await _status(target, "r1"), "ready", "run after delivery")
    equal(await store.deliver(replace(m1, payload={"text": "dup"}), now=at(1)), False,
          "redelivery")
    await store.deliver(m2, now=at(2))
    equal(await store.list_messages("r1"), [m1, m2], "inbox")
    equal(await store.next_message("r1", "reply"), m1, "next message")
    equal(await store.next_message("r1", "other"), None, "next message on another channel")
    step = StepRecord("r1", 4, "receive", "reply", {"message_id": "m1"}, at(3))
    await store.consume_message(m1, step)
    equal(await store.next_message("r1", "reply"), m2, "next message after consuming m1")
    equal((await store.load_steps("r1")).get(4), step, "step recorded with the consumption")
    equal([m.consumed_seq for m in await store.list_messages("r1")], [4, None], "consumed")


@check
async def check_delivery_to_a_running_run_is_not_lost(target: ContractTarget) -> None:
    """A message delivered while the run executes makes its next suspension 'ready'."""
    store = target.store
    await store.create_run(run("r1"))
    await store.claim_runs("A", now=at(0), lease_until=LEASE, limit=1, dead_owners=[])
    await store.deliver(MessageRecord("r1", "m1", "c", 1, at(1)), now=at(1))
    await store.suspend_run("r1", owner="A", now=at(2))
    equal(await _status(target, "r1"), "ready", "suspension after a delivery")


@check
async def check_migrate_run_moves_only_idle_runs(target: ContractTarget) -> None:
    """migrate_run repins a waiting or stranded run and journals who did it; a running or
    finished run does not move."""
    store = target.store
    for run_id, status in (("w", "waiting"), ("x", "running"), ("d", "completed")):
        await store.create_run(RunRecord(run_id, "a", "1", status, {}, 0, at(0), at(0),
                                         {"agent_version": "1"}))
    moved = await store.migrate_run("w", agent_version="2", pins={"agent_version": "2"},
                                    event=EventRecord("w", "run.migrated", {"by": "ann"}, at(1)),
                                    now=at(1))
    run = await store.get_run("w")
    equal((moved, run and (run.agent_version, run.status, run.pins)),
          (True, ("2", "ready", {"agent_version": "2"})), "waiting run migrated")
    equal([e.data for e in await store.list_events("w", kind="run.migrated")], [{"by": "ann"}],
          "migration journaled")
    for run_id in ("x", "d"):
        equal(await store.migrate_run(run_id, agent_version="2", pins={}, event=EventRecord(
            run_id, "run.migrated", {}, at(1)), now=at(1)), False, f"{run_id} not moved")
