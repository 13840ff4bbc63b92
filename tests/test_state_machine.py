"""P5, the shared state machine: legal moves only, compare-and-swap on (row, version) with
exactly one winner under real concurrency (asyncio tasks and OS processes), the LLM's
narrow proposal checked by a deterministic verifier, replay-safe transitions inside runs,
manual overrides, the audit topic and the lines ``runs show`` prints."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from threshold import ModelRegistry, Prompt, RunContext, Runtime, ScriptedModel, VirtualClock
from threshold import open_store as open_url
from threshold.errors import (
    ConfigError,
    CrashInjected,
    IllegalTransitionError,
    StaleWriteError,
    UnauthorizedError,
)
from threshold.patterns.state_machine import (
    STALE,
    StateMachine,
    StateRow,
    describe_state,
)
from threshold.patterns.topics import Topic
from threshold.store import SQLiteStore, Store
from threshold.testing import CrashPlan

HERE = Path(__file__).parent

STATES = ["init", "window_open", "offer_sent", "human_required", "expired", "closed"]
MOVES = {"init": {"window_open"}, "window_open": {"offer_sent", "human_required"},
         "offer_sent": {"expired", "closed", "human_required"},
         "human_required": {"offer_sent", "closed"}, "expired": {"closed"}}


def machine(emit_to: str | None = None) -> StateMachine:
    return StateMachine("renewal", STATES, MOVES, "init", terminal={"closed"},
                        pauses={"human_required"}, emit_to=emit_to)


def sqlite(tmp_path: Path, name: str = "state.db") -> Store:
    return open_url(f"sqlite:///{tmp_path / name}")


class Notes(BaseModel):
    note: str = ""
    discount_pct: int = 0


def scripted(tmp_path: Path, answers: list[str], **kwargs: Any) -> Runtime:
    models = ModelRegistry()
    models.add("scripted", ScriptedModel(answers))
    return Runtime(sqlite(tmp_path), clock=VirtualClock(), models=models,
                   default_model="scripted", **kwargs)


def proposal(to_state: str, **payload: Any) -> str:
    return json.dumps({"to_state": to_state, "payload": payload, "reason": "scripted"})


def test_a_definition_naming_unknown_states_or_leaving_a_terminal_state_is_refused() -> None:
    """A transition table that mentions an undeclared state, or lets a terminal state move
    on, is a configuration error at definition time, not a surprise at run time."""
    with pytest.raises(ConfigError, match="unknown state 'shipped'"):
        StateMachine("m", ["a", "b"], {"a": {"shipped"}}, "a")
    with pytest.raises(ConfigError, match="terminal state 'b' has transitions"):
        StateMachine("m", ["a", "b"], {"a": {"b"}, "b": {"a"}}, "a", terminal={"b"})
    with pytest.raises(ConfigError, match="unknown state 'waiting'"):
        StateMachine("m", ["a", "b"], {"a": {"b"}}, "a", pauses={"waiting"})


def test_legal_moves_bump_the_version_and_are_journaled_in_the_same_write(
        tmp_path: Path) -> None:
    """Each legal move writes version n+1 over n, merges its payload into the row, counts
    itself in history_len and leaves exactly one state.transition event per version."""
    m = machine()

    async def go() -> None:
        rt = Runtime(sqlite(tmp_path), clock=VirtualClock())
        absent = await m.read(rt, "r1")
        assert (absent.state, absent.version) == ("init", 0)
        row = await m.apply(rt, "r1", 0, "window_open", {"tenure": 12}, actor="ops")
        row = await m.apply(rt, "r1", row.version, "offer_sent", Notes(discount_pct=10))
        stored = await m.read(rt, "r1")
        assert stored == row
        assert (row.state, row.version, row.history_len) == ("offer_sent", 2, 2)
        assert row.payload == {"tenure": 12, "note": "", "discount_pct": 10}
        moves = await m.history(rt, "r1")
        assert [(e.data["from"], e.data["to"], e.data["version"]) for e in moves] == [
            ("init", "window_open", 1), ("window_open", "offer_sent", 2)]
        assert moves[0].data["actor"] == "ops"

    asyncio.run(go())


def test_an_illegal_move_is_refused_and_leaves_the_row_alone(tmp_path: Path) -> None:
    """A move the table does not allow from the current state raises
    IllegalTransitionError naming what is allowed, and writes nothing."""
    m = machine()

    async def go() -> None:
        store = sqlite(tmp_path)
        await m.apply(store, "r1", 0, "window_open")
        with pytest.raises(IllegalTransitionError) as refused:
            await m.apply(store, "r1", 1, "closed")
        assert refused.value.allowed == ["human_required", "offer_sent"]
        assert (await m.read(store, "r1")).version == 1
        assert len(await m.history(store, "r1")) == 1

    asyncio.run(go())


def test_a_stale_write_raises_and_the_retry_rechecks_legality_at_the_new_version(
        tmp_path: Path) -> None:
    """Writing at a version the row has left raises StaleWriteError (journaled as
    state.stale_write); transition_with_retry re-reads and lands when the move is still
    legal, and refuses it when the row moved where the move is illegal."""
    m = machine()

    async def go() -> None:
        store = sqlite(tmp_path)
        await m.apply(store, "r1", 0, "window_open")
        await m.apply(store, "r1", 1, "offer_sent")
        with pytest.raises(StaleWriteError) as stale:
            await m.apply(store, "r1", 1, "human_required")
        assert (stale.value.expected, stale.value.actual) == (1, 2)
        assert len(await store.list_events(kind=STALE)) == 1
        # read at v1 (window_open), written at v2 (offer_sent): still legal there
        row = await m.transition_with_retry(store, "r1", "human_required", expected_version=1)
        assert (row.state, row.version) == ("human_required", 3)
        # read at v2 (offer_sent -> expired is legal) but the row is human_required now
        with pytest.raises(IllegalTransitionError):
            await m.transition_with_retry(store, "r1", "expired", expected_version=2)
        assert (await m.read(store, "r1")).version == 3

    asyncio.run(go())


def test_racing_asyncio_tasks_on_separate_connections_produce_one_winner_per_version(
        tmp_path: Path) -> None:
    """Eight tasks on four connections read the same version, yield, then all write: in
    every round exactly one wins, the rest get StaleWriteError, and the row's version and
    journal count exactly the winners."""
    m = StateMachine("toggle", ["a", "b"], {"a": {"b"}, "b": {"a"}}, "a")
    rounds, racers = 25, 8

    async def go() -> None:
        stores = [SQLiteStore(str(tmp_path / "race.db")) for _ in range(4)]
        barrier = asyncio.Barrier(racers)

        async def racer(i: int) -> str:
            store = stores[i % len(stores)]
            row = await m.read(store, "row")
            await barrier.wait()  # everyone has read the same version before anyone writes
            target = "b" if row.state == "a" else "a"
            try:
                await m.apply(store, "row", row.version, target, {"by": i}, actor=f"t{i}")
            except StaleWriteError:
                return "stale"
            return "won"

        for r in range(rounds):
            outcomes = Counter(await asyncio.gather(*(racer(i) for i in range(racers))))
            assert outcomes == {"won": 1, "stale": racers - 1}, (r, outcomes)
        final = await m.read(stores[0], "row")
        assert final.version == rounds == final.history_len
        assert len(await m.history(stores[0], "row")) == rounds

    asyncio.run(go())


def test_two_os_processes_racing_on_one_sqlite_file_produce_one_winner_per_version(
        tmp_path: Path) -> None:
    """Two processes toggle one row 150 times each, each writing at the version it read:
    they do collide (stale writes happen), and every version from 1 to the last has
    exactly one winner, matching the row and its journal."""
    db, go = tmp_path / "race.db", tmp_path / "go"
    asyncio.run(_touch_schema(db))
    procs = [subprocess.Popen([sys.executable, "-m", "procs.state_race", str(db), name, "150",
                               str(go)], cwd=HERE, stdout=subprocess.PIPE, text=True)
             for name in ("p1", "p2")]
    deadline = time.monotonic() + 60
    while not all(go.with_name(f"go.{n}.ready").exists() for n in ("p1", "p2")):
        assert time.monotonic() < deadline, "the racers never became ready"
        time.sleep(0.005)
    go.touch()
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    wins = [v for r in results for v in r["wins"]]
    assert sorted(wins) == list(range(1, len(wins) + 1))  # no version won twice, none lost
    assert sum(r["stale"] for r in results) > 0, "the processes never collided"
    assert len(wins) + sum(r["stale"] for r in results) == 300

    async def check() -> None:
        store = SQLiteStore(str(db))
        m = StateMachine("toggle", ["a", "b"], {"a": {"b"}, "b": {"a"}}, "a")
        row = await m.read(store, "row-1")
        assert row.version == len(wins) == row.history_len
        assert [e.data["version"] for e in await m.history(store, "row-1")] == sorted(wins)

    asyncio.run(check())


async def _touch_schema(db: Path) -> None:
    store = SQLiteStore(str(db))
    await store.close()


def test_the_boundary_rejects_an_illegal_proposal_and_applies_the_legal_retry(
        tmp_path: Path) -> None:
    """The model first proposes a move the table forbids from the row's state; the
    legality verifier rejects it with feedback, the corrected proposal commits, and the
    move is applied at the verified version, linked to the crossing and proposal hash."""
    m = machine()
    boundary = m.transition_boundary(
        "next_step", Prompt("next", "1", "The row is {state}; choose one of {allowed_states}."),
        payload_type=Notes)
    rt = scripted(tmp_path, [proposal("closed"), proposal("offer_sent", discount_pct=12)])

    @rt.agent("renewal")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        await m.apply(ctx, ctx.run_id, 0, "window_open")
        moved = await m.propose_transition(ctx, boundary, ctx.run_id, {})
        assert moved.after is not None
        return {"after": moved.after.to_json(), "attempts": moved.crossing.attempts,
                "hash": moved.crossing.proposal_hash}

    async def go() -> None:
        await rt.start("renewal", {}, run_id="r1")
        await rt.run_until_idle()
        run = await rt.store.get_run("r1")
        assert run is not None and run.status == "completed", run
        assert run.result["attempts"] == 2
        assert run.result["after"]["state"] == "offer_sent"
        assert run.result["after"]["payload"]["discount_pct"] == 12
        verdicts = [(v.verifier, v.verdict, v.code) for v in await rt.store.list_verdicts("r1")
                    if v.verifier == "state.legal_transition"]
        assert verdicts == [("state.legal_transition", "reject", "state.illegal_transition"),
                            ("state.legal_transition", "accept", None)]
        last = (await m.history(rt, "r1"))[-1]
        assert last.data["proposal_hash"] == run.result["hash"]
        assert last.data["crossing_id"] and last.data["from_version"] == 1
        feedback = rt.models.get("scripted")  # the second request carried the reject
        assert isinstance(feedback, ScriptedModel)
        assert "state.illegal_transition" in feedback.requests[1].feedback[0]

    asyncio.run(go())


def test_a_crossing_without_the_row_in_its_facts_is_refused(tmp_path: Path) -> None:
    """The legality verifier fails closed: a transition crossing whose facts do not carry
    the row it was read from is rejected, never waved through."""
    m = machine()
    boundary = m.transition_boundary("next_step", Prompt("next", "1", "Choose."))
    rt = scripted(tmp_path, [proposal("window_open")])

    @rt.agent("renewal")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> str:
        crossing = await ctx.cross(boundary, {})
        return crossing.outcome

    async def go() -> None:
        await rt.start("renewal", {}, run_id="r1")
        await rt.run_until_idle()
        run = await rt.store.get_run("r1")
        assert run is not None and run.result == "aborted"
        codes = {v.code for v in await rt.store.list_verdicts("r1") if v.verdict == "reject"}
        assert codes == {"state.no_row"}

    asyncio.run(go())


def test_the_proposal_schema_names_only_declared_states(tmp_path: Path) -> None:
    """The proposal type restricts to_state to the machine's states, so a made-up state is
    a schema reject before any business verifier runs."""
    kind = machine().proposal_type(Notes)
    assert kind.model_json_schema()["properties"]["to_state"]["enum"] == STATES
    assert kind.model_validate({"to_state": "closed", "payload": {}}).to_state == "closed"
    with pytest.raises(ValidationError):
        kind.model_validate({"to_state": "teleported", "payload": {}})


def test_a_transition_in_a_run_is_applied_once_across_a_crash_before_its_record(
        tmp_path: Path) -> None:
    """A process crash after the CAS and before the run journaled it: the resumed run
    recognises its own write by its idempotency key instead of moving the row again or
    reporting it stale; the row moved once and its journal has one event."""
    m = machine(emit_to="renewal.transitions")

    def build(crash: CrashPlan | None) -> Runtime:
        rt = Runtime(sqlite(tmp_path), clock=VirtualClock(), crash_hook=crash)

        @rt.agent("renewal")
        async def agent(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
            row = await m.apply(ctx, ctx.run_id, 0, "window_open")
            row = await m.apply(ctx, ctx.run_id, row.version, "offer_sent")
            return row.to_json()

        return rt

    async def crashing() -> None:
        rt = build(CrashPlan("after_effect", nth=2, mode="raise"))
        await rt.start("renewal", {}, run_id="r1")
        with pytest.raises(BaseExceptionGroup) as crashed:
            await rt.run_until_idle()
        assert crashed.group_contains(CrashInjected)
        assert (await m.read(rt, "r1")).version == 2  # the second CAS did happen

    async def resumed() -> None:
        rt = build(None)
        await rt.run_until_idle()
        run = await rt.store.get_run("r1")
        assert run is not None and run.status == "completed", run
        assert (run.result["state"], run.result["version"]) == ("offer_sent", 2)
        assert [e.data["version"] for e in await m.history(rt, "r1")] == [1, 2]
        assert await rt.store.list_events(kind=STALE) == []
        emitted = await Topic(rt.store, "renewal.transitions").read()
        assert [e.payload["version"] for e in emitted] == [1, 2]

    asyncio.run(crashing())
    asyncio.run(resumed())


def test_a_lost_cas_inside_a_run_replays_as_the_same_stale_error(tmp_path: Path) -> None:
    """A run that lost a CAS records the loss; when the run resumes later (the row has
    moved again meanwhile) the replay raises the recorded StaleWriteError, not a new
    decision."""
    m = machine()
    rt = Runtime(sqlite(tmp_path), clock=VirtualClock())

    @rt.agent("renewal")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        row = await m.read(ctx, "shared")
        await ctx.step("someone_else_moves", _move_behind_its_back, rt)
        try:
            await m.apply(ctx, "shared", row.version, "window_open")
        except StaleWriteError as exc:
            outcome = f"stale {exc.expected}->{exc.actual}"
        await ctx.sleep(timedelta(days=1))
        return {"outcome": outcome}

    async def go() -> None:
        await rt.start("renewal", {}, run_id="r1")
        await rt.run_until_idle()
        run = await rt.store.get_run("r1")
        assert run is not None and run.result == {"outcome": "stale 0->1"}, run
        assert len(await m.history(rt, "shared")) == 1

    asyncio.run(go())


async def _move_behind_its_back(rt: Runtime) -> int:
    row = await machine().apply(rt, "shared", 0, "window_open", actor="other-worker")
    return row.version


def test_an_override_needs_the_role_and_a_reason_and_may_leave_the_table(
        tmp_path: Path) -> None:
    """A principal without the override role is refused (and the refusal journaled); an
    admin with a reason moves the row to any declared state, journaled as state.override
    with who and why."""
    m = machine()

    async def go() -> None:
        rt = Runtime(sqlite(tmp_path), clock=VirtualClock())
        await m.apply(rt, "r1", 0, "window_open")
        with pytest.raises(UnauthorizedError):
            await m.override(rt, "r1", "closed", "eve@viewer", "tidy up")
        assert [e.kind for e in await rt.store.list_events(kind="state.override_refused")] \
            == ["state.override_refused"]
        with pytest.raises(IllegalTransitionError):
            await m.override(rt, "r1", "vanished", "ann@admin", "typo")
        row = await m.override(rt, "r1", "closed", "ann@admin", "customer called to cancel")
        assert (row.state, row.version) == ("closed", 2)  # window_open -> closed: off-table
        last = (await m.history(rt, "r1"))[-1]
        assert (last.kind, last.data["actor"], last.data["reason"]) == (
            "state.override", "ann@admin", "customer called to cancel")

    asyncio.run(go())


def test_the_audit_topic_gets_every_move_once_and_sync_fills_a_gap(tmp_path: Path) -> None:
    """With emit_to, each move is published once with a (row, version) dedupe key; a move
    journaled without its publish (a process that died in between) is published by
    sync_topic, and a second sync publishes nothing."""
    audited, silent = machine(emit_to="renewal.audit"), machine()

    async def go() -> None:
        rt = Runtime(sqlite(tmp_path), clock=VirtualClock())
        await audited.apply(rt, "r1", 0, "window_open")
        await silent.apply(rt, "r1", 1, "offer_sent")  # journaled, never published
        await audited.apply(rt, "r1", 2, "closed")
        topic = Topic(rt.store, "renewal.audit")
        assert [e.payload["version"] for e in await topic.read()] == [1, 3]
        assert await audited.sync_topic(rt) == 1
        assert await audited.sync_topic(rt) == 0
        events = await topic.read()
        assert sorted(e.payload["version"] for e in events) == [1, 2, 3]
        assert {e.headers["dedupe_key"] for e in events} == {
            "state/r1@1", "state/r1@2", "state/r1@3"}

    asyncio.run(go())


def test_describe_state_says_which_pending_timers_will_fire_or_lapse(tmp_path: Path) -> None:
    """The lines for runs show: the run's row with state and version, and each pending
    timer with its guard and whether the row still sits at the guarded version."""
    m = machine()
    rt = Runtime(sqlite(tmp_path), clock=VirtualClock())

    @rt.agent("renewal")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> str:
        row = await m.apply(ctx, ctx.run_id, 0, "window_open")
        return await m.sleep(ctx, row, timedelta(days=30), purpose="offer_expiry")

    class Inspector:
        """Looks at the run while it waits, before the worker moves time to the timer."""

        def __init__(self) -> None:
            self.seen: list[list[str]] = []

        async def next_due(self) -> datetime | None:
            run = await rt.store.get_run("r1")
            if run is not None and run.status == "waiting" and not self.seen:
                self.seen.append(await describe_state(rt.store, "r1"))
                await m.override(rt, "r1", "closed", "ann@admin", "cancelled")
                self.seen.append(await describe_state(rt.store, "r1"))
            return None

        async def act(self, now: datetime) -> int:
            return 0

    inspector = Inspector()
    rt.actors.append(inspector)

    async def go() -> None:
        await rt.start("renewal", {}, run_id="r1")
        await rt.run_until_idle()
        before, after = inspector.seen
        assert before[0].startswith("state state/r1 [renewal]: window_open v1, 1 transition")
        assert "'offer_expiry' pending" in before[1]
        assert "guard state/r1@v1, row now v1: will fire" in before[1]
        assert "closed v2" in after[0] and "will lapse (row moved on)" in after[1]
        assert await describe_state(rt.store, "r1") == [after[0]]  # the timer is gone
        run = await rt.store.get_run("r1")
        assert run is not None and run.result == "lapsed"

    asyncio.run(go())


def test_a_row_written_by_another_machine_is_not_misread(tmp_path: Path) -> None:
    """Two machines sharing a namespace cannot read each other's rows as their own."""
    other = StateMachine("billing", ["open", "paid"], {"open": {"paid"}}, "open")

    async def go() -> None:
        store = sqlite(tmp_path)
        await other.apply(store, "r1", 0, "paid")
        with pytest.raises(Exception, match="belongs to machine 'billing'"):
            await machine().read(store, "r1")
        row = StateRow.from_json((await other.read(store, "r1")).to_json())
        assert row.machine == "billing"

    asyncio.run(go())


def test_create_writes_the_initial_row_once(tmp_path: Path) -> None:
    """create writes the initial state at version 1 with its payload, is a no-op when the
    row exists, and the first move then goes from version 1."""
    m = machine()

    async def go() -> None:
        rt = Runtime(sqlite(tmp_path), clock=VirtualClock())
        row = await m.create(rt, "r1", {"customer": "c1"})
        assert (row.state, row.version, row.history_len) == ("init", 1, 0)
        assert await m.create(rt, "r1", {"customer": "other"}) == row
        moved = await m.apply(rt, "r1", 1, "window_open")
        assert (moved.version, moved.payload) == (2, {"customer": "c1"})
        assert [e.data["to"] for e in await m.history(rt, "r1")] == ["init", "window_open"]

    asyncio.run(go())
