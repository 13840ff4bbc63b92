"""Contract checks for the journal: crossings, effects, approvals, events, versioned records,
topics and meta."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from threshold.store import (
    ApprovalRecord,
    AttemptRecord,
    CrossingRecord,
    CrossingState,
    EffectRecord,
    EventRecord,
    MessageRecord,
    StepRecord,
    VerdictRecord,
)
from threshold.testing._contract_base import (
    ContractTarget,
    at,
    check,
    equal,
    expect,
    handles,
    run,
)


def _crossing(run_id: str = "r1", seq: int = 1) -> CrossingRecord:
    return CrossingRecord(f"{run_id}/{seq}", run_id, seq, "pricing", "2", "send_offer",
                          [["schema", "1"], ["cap", "2"]], "open", 1, at(1), "sim:v1", "offer",
                          "3")


def _proposal(crossing_id: str, attempt: int, value: dict[str, object]) -> AttemptRecord:
    return AttemptRecord(
        crossing_id, attempt, "proposal", at(attempt), f"hash{attempt}",
        raw='{"discount_pct": 45} ü \x00 trailing bytes', value=value,
        provenance={"model_id": "sim", "seed": 2**62, "latency_ms": 12.5, "tokens_in": None})


def _verdicts(crossing_id: str, attempt: int, cap: str) -> list[VerdictRecord]:
    # Inserted schema first, then cap: the journal keeps that order, not the name order.
    schema = VerdictRecord(crossing_id, attempt, "schema", "1", "accept", f"hash{attempt}",
                           at(attempt))
    if cap == "accept":
        return [schema, VerdictRecord(crossing_id, attempt, "cap", "2", "accept",
                                      f"hash{attempt}", at(attempt), message="within cap")]
    return [schema, VerdictRecord(crossing_id, attempt, "cap", "2", "reject", f"hash{attempt}",
                                  at(attempt), "policy.cap", "45% is over 30%", True,
                                  "offer at most 30", "discount_pct")]


# crossings -------------------------------------------------------------------------------
@check
async def check_crossing_round_trip(target: ContractTarget) -> None:
    """save_attempt and finish_crossing store attempts, verdicts (in insertion order), the
    effect intent and result and the step, and load_crossing/list_* read them back."""
    store = target.store
    crossing = _crossing()
    cid = crossing.crossing_id
    a1, a2 = _proposal(cid, 1, {"discount_pct": 45}), _proposal(cid, 2, {"discount_pct": 20})
    v1, v2 = _verdicts(cid, 1, "reject"), _verdicts(cid, 2, "accept")
    intent = EffectRecord(f"{cid}/send_offer", "r1", "send_offer", "intent", at(2), cid, "hash2")
    equal(await store.save_attempt(crossing, a1, v1, None), None, "intent of a rejection")
    crossing = replace(crossing, attempts=2)
    equal(await store.save_attempt(crossing, a2, v2, intent), intent, "stored intent")
    equal(await store.load_crossing(cid), CrossingState(crossing, [a1, a2], v1 + v2, intent),
          "crossing before its end")
    done = replace(intent, status="done", performed=1, result={"sent": True}, done_at=at(3))
    final = replace(crossing, status="committed", committed_hash="hash2",
                    outcome={"discount_pct": 20}, ended_at=at(3), reason=None)
    human = VerdictRecord(cid, 2, "human", "pricing", "accept", "hash2", at(3),
                          decided_by="bob@pricing")
    step = StepRecord("r1", 1, "cross", "pricing", {"outcome": "committed"}, at(3))
    await store.finish_crossing(final, effect=done, step=step, verdicts=[human])
    equal(await store.load_crossing(cid), CrossingState(final, [a1, a2], v1 + v2 + [human],
                                                        done), "crossing after its end")
    equal((await store.load_steps("r1")).get(1), step, "the crossing's step")
    other = _crossing("r2")
    await store.save_attempt(other, _proposal(other.crossing_id, 1, {}), [], None)
    equal(await store.list_crossings("r1"), [final], "crossings of r1")
    equal([c.crossing_id for c in await store.list_crossings()], [cid, other.crossing_id],
          "all crossings")
    equal(await store.list_attempts("r1"), [a1, a2], "attempts of r1")
    equal(len(await store.list_attempts()), 3, "all attempts")
    equal(await store.list_verdicts("r1"), v1 + v2 + [human], "verdicts of r1")
    equal(await store.load_crossing("r9/1"), None, "an unknown crossing")


@check
async def check_transport_error_attempt_round_trip(target: ContractTarget) -> None:
    """An attempt that produced no proposal keeps its error kind, message and retry time."""
    store = target.store
    crossing = _crossing()
    attempt = AttemptRecord(crossing.crossing_id, 1, "transport_error", at(1),
                            error_kind="rate_limited", error_message="429 slow down",
                            retry_at=at(5))
    await store.save_attempt(crossing, attempt, (), None)
    await store.save_crossing(replace(crossing, status="escalated", reason="waiting"))
    state = await store.load_crossing(crossing.crossing_id)
    expect(state is not None, "crossing stored")
    assert state is not None
    equal(state.attempts, [attempt], "transport attempt")
    equal((state.crossing.status, state.crossing.reason), ("escalated", "waiting"),
          "save_crossing")


@check
async def check_save_attempt_returns_the_existing_intent(target: ContractTarget) -> None:
    """An intent recorded earlier under the same key wins over a newer one."""
    store = target.store
    crossing = _crossing()
    cid = crossing.crossing_id
    older = EffectRecord(f"{cid}/send_offer", "r1", "send_offer", "intent", at(1), cid, "hash1")
    await store.begin_effect(older)
    newer = replace(older, intent_at=at(9), proposal_hash="hash2")
    got = await store.save_attempt(crossing, _proposal(cid, 1, {}), _verdicts(cid, 1, "accept"),
                                   newer)
    equal(got, older, "intent returned by save_attempt")


# effects ---------------------------------------------------------------------------------
@check
async def check_effect_keys_are_unique(target: ContractTarget) -> None:
    """begin_effect twice returns the first intent; finish_effect records the result and
    its step; a done effect is returned as done."""
    store = target.store
    first = EffectRecord("r1/2/email", "r1", "email", "intent", at(1))
    equal(await store.begin_effect(first), first, "first intent")
    equal(await store.begin_effect(replace(first, intent_at=at(5))), first, "second intent")
    done = replace(first, status="done", performed=1, result={"id": 7}, done_at=at(2))
    step = StepRecord("r1", 2, "effect", "email", {"key": first.key}, at(2))
    await store.finish_effect(done, step=step)
    equal(await store.get_effect(first.key), done, "effect after finish")
    equal(await store.begin_effect(replace(first, intent_at=at(6))), done, "intent after done")
    equal((await store.load_steps("r1")).get(2), step, "the effect's step")
    failed = EffectRecord("r2/1/sms", "r2", "sms", "failed", at(0), performed=1,
                          error="TimeoutError: gateway", done_at=at(1))
    await store.begin_effect(failed)
    equal(await store.list_effects("r2"), [failed], "effects of r2")
    equal([e.key for e in await store.list_effects()], ["r2/1/sms", "r1/2/email"],
          "all effects, by intent time")
    equal(await store.get_effect("none"), None, "an unknown effect")


@check
async def check_concurrent_intents_keep_one(target: ContractTarget) -> None:
    """Workers recording an intent for one key at once all get the same stored intent."""
    async with handles(target, 6) as stores:
        got = await asyncio.gather(*(
            s.begin_effect(EffectRecord("k", "r1", "pay", "intent", at(i)))
            for i, s in enumerate(stores)))
    equal(len({e.intent_at for e in got}), 1, "distinct intents returned")
    equal(await target.store.get_effect("k"), got[0], "stored intent")


# approvals -------------------------------------------------------------------------------
def _approval() -> ApprovalRecord:
    return ApprovalRecord("apr-r1/1", "r1", "r1/1", "pricing", "hash1", {"discount_pct": 45},
                          "over cap", "pricing", at(1), sla_due=at(100),
                          fallback={"kind": "deny"})


def _decision(approval: ApprovalRecord, who: str, approve: bool) -> ApprovalRecord:
    return replace(approval, status="approved" if approve else "denied",
                   decided_by=who, decided_at=at(5), comment=f"by {who}")


@check
async def check_decide_approval_only_once(target: ContractTarget) -> None:
    """The first decision wins and delivers its message (waking the run); later ones are
    refused and change nothing."""
    store = target.store
    await store.create_run(run("r1", status="waiting"))
    approval = _approval()
    await store.create_approval(approval)
    await store.create_approval(replace(approval, reason="again"))
    equal(await store.get_approval(approval.approval_id), approval, "stored approval")
    equal(await store.list_approvals(status="pending"), [approval], "pending approvals")
    bob = _decision(approval, "bob@pricing", True)
    message = MessageRecord("r1", "decision:apr-r1/1", "approval", {"approve": True}, at(5))
    equal(await store.decide_approval(bob, message, now=at(5)), True, "first decision")
    eve = _decision(approval, "eve@pricing", False)
    equal(await store.decide_approval(eve, replace(message, message_id="eve"), now=at(6)),
          False, "second decision")
    equal(await store.get_approval(approval.approval_id), bob, "decision kept")
    equal(await store.list_messages("r1"), [message], "decision messages")
    equal((await store.get_run("r1") or run("x")).status, "ready", "run after the decision")
    equal(await store.list_approvals(status="pending"), [], "pending after the decision")
    equal(await store.list_approvals(run_id="r1"), [bob], "approvals of r1")


@check
async def check_concurrent_decisions_have_one_winner(target: ContractTarget) -> None:
    """Principals deciding at once: exactly one decision is written and delivered."""
    store = target.store
    await store.create_run(run("r1", status="waiting"))
    approval = _approval()
    await store.create_approval(approval)
    async with handles(target, 6) as stores:
        results = await asyncio.gather(*(
            s.decide_approval(_decision(approval, f"p{i}@pricing", i % 2 == 0),
                              MessageRecord("r1", f"m{i}", "approval", i, at(5)), now=at(5))
            for i, s in enumerate(stores)))
    equal(results.count(True), 1, "winning decisions")
    winner = results.index(True)
    stored = await store.get_approval(approval.approval_id)
    equal(None if stored is None else stored.decided_by, f"p{winner}@pricing", "decided by")
    equal([m.message_id for m in await store.list_messages("r1")], [f"m{winner}"],
          "delivered decisions")


# events ----------------------------------------------------------------------------------
@check
async def check_events_append_in_order(target: ContractTarget) -> None:
    """Events get increasing ids and list in append order, by run and by kind; an event
    can be journaled together with the run step that wrote it."""
    store = target.store
    events = [EventRecord("r1", "transition", {"to": "offered"}, at(1)),
              EventRecord(None, "kill_switch", {"scope": "*"}, at(2)),
              EventRecord("r1", "note", {"text": "ü"}, at(3)),
              EventRecord("r2", "transition", {"to": "lost"}, at(4))]
    ids = [await store.append_event(e) for e in events[:3]]
    step = StepRecord("r2", 1, "event", "transition", {"to": "lost"}, at(4))
    ids.append(await store.append_event(events[3], step=step))
    expect(ids == sorted(ids) and len(set(ids)) == 4, f"event ids increase, found {ids}")
    equal(await store.load_steps("r2"), {1: step}, "step journaled with its event")
    stored = [replace(e, event_id=i) for e, i in zip(events, ids, strict=True)]
    equal(await store.list_events(), stored, "all events")
    equal(await store.list_events("r1"), [stored[0], stored[2]], "events of r1")
    equal(await store.list_events(kind="transition"), [stored[0], stored[3]], "transitions")
    equal(await store.list_events("r1", kind="note"), [stored[2]], "notes of r1")


# versioned records -----------------------------------------------------------------------
@check
async def check_cas_record_versions(target: ContractTarget) -> None:
    """cas_record writes version n+1 only over version n (0: absent); a stale write changes
    nothing, journals nothing and returns None."""
    store = target.store
    equal(await store.get_record("renewal", "c1"), None, "absent record")
    v1 = await store.cas_record("renewal", "c1", expected_version=0, value={"s": "new"},
                                now=at(1))
    equal(None if v1 is None else (v1.version, v1.value), (1, {"s": "new"}), "create")
    equal(await store.cas_record("renewal", "c1", expected_version=0, value={}, now=at(2)),
          None, "second create")
    moved = EventRecord("r1", "transition", {"to": "offered"}, at(3))
    v2 = await store.cas_record("renewal", "c1", expected_version=1, value={"s": "offered"},
                                now=at(3), event=moved)
    equal(None if v2 is None else v2.version, 2, "update over version 1")
    stale = EventRecord("r1", "transition", {"to": "lost"}, at(4))
    equal(await store.cas_record("renewal", "c1", expected_version=1, value={"s": "lost"},
                                 now=at(4), event=stale), None, "stale update")
    equal(await store.get_record("renewal", "c1"), v2, "record after the stale write")
    equal([e.data for e in await store.list_events("r1")], [{"to": "offered"}],
          "events journaled with the writes")
    await store.cas_record("renewal", "a0", expected_version=0, value=None, now=at(5))
    equal([(r.key, r.version) for r in await store.list_records("renewal")],
          [("a0", 1), ("c1", 2)], "records of the namespace")
    equal(await store.list_records("other"), [], "another namespace")


@check
async def check_cas_record_has_one_winner(target: ContractTarget) -> None:
    """Concurrent writers at the same version: exactly one wins, creating or updating."""
    store = target.store
    async with handles(target, 8) as stores:
        created = await asyncio.gather(*(
            s.cas_record("ns", "k", expected_version=0, value=i, now=at(1))
            for i, s in enumerate(stores)))
        equal(sum(r is not None for r in created), 1, "winning creates")
        updated = await asyncio.gather(*(
            s.cas_record("ns", "k", expected_version=1, value=100 + i, now=at(2))
            for i, s in enumerate(stores)))
    winners = [r for r in updated if r is not None]
    equal(len(winners), 1, "winning updates")
    stored = await store.get_record("ns", "k")
    equal(None if stored is None else (stored.version, stored.value),
          (2, winners[0].value), "record after the race")


# topics and meta -------------------------------------------------------------------------
@check
async def check_topics_have_ordered_offsets(target: ContractTarget) -> None:
    """Each topic numbers its events 1, 2, 3...; reads resume after an offset."""
    store = target.store
    for i in range(3):
        equal(await store.append_topic("a", key=f"k{i}", payload={"i": i}, headers={"v": "1"},
                                       event_time=at(i), now=at(10 + i)), i + 1, f"offset {i}")
    equal(await store.append_topic("b", key=None, payload=None, headers={}, event_time=at(0),
                                   now=at(0)), 1, "first offset of b")
    events = await store.read_topic("a", after=1, limit=10)
    equal([(e.offset, e.key, e.payload, e.headers, e.event_time, e.appended_at)
           for e in events],
          [(2, "k1", {"i": 1}, {"v": "1"}, at(1), at(11)),
           (3, "k2", {"i": 2}, {"v": "1"}, at(2), at(12))], "events after offset 1")
    equal([e.offset for e in await store.read_topic("a", after=0, limit=2)], [1, 2], "limit")
    equal(await store.read_topic("a", after=3, limit=10), [], "read past the end")
    equal(await store.list_topics(), [("a", 3), ("b", 1)], "topics")


@check
async def check_concurrent_topic_appends_are_gapless(target: ContractTarget) -> None:
    """Appenders racing on one topic get distinct offsets 1..n with no gap."""
    async with handles(target, 4) as stores:
        offsets = await asyncio.gather(*(
            s.append_topic("t", key=None, payload={"w": w, "i": i}, headers={},
                           event_time=at(i), now=at(i))
            for i in range(10) for w, s in enumerate(stores)))
    equal(sorted(offsets), list(range(1, 41)), "offsets")
    events = await target.store.read_topic("t", after=0, limit=100)
    equal([e.offset for e in events], list(range(1, 41)), "offsets read back")


@check
async def check_meta_round_trip(target: ContractTarget) -> None:
    """meta is a plain key-value map: absent is None, the last write wins."""
    store = target.store
    equal(await store.get_meta("clock"), None, "absent key")
    await store.set_meta("clock", "2026-01-01")
    await store.set_meta("clock", "2026-02-01")
    equal(await store.get_meta("clock"), "2026-02-01", "overwritten key")
