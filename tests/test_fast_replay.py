"""Verify-only deterministic replay (the fast path) against the full engine, on real SQLite
journals: same verdicts on clean runs, same first diverging step on altered code, and a
fallback to the full engine for what the fast path does not decide alone."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from threshold import (
    Accept,
    Boundary,
    EffectContext,
    Escalate,
    Prompt,
    Reject,
    RejectPolicy,
    RunContext,
    Runtime,
    ScriptedModel,
    VerifyContext,
    VirtualClock,
    open_store,
    verifier,
)
from threshold.cli._main import main
from threshold.errors import EffectFailed, NondeterminismError, ServerError
from threshold.models import Completion
from threshold.patterns.scatter import Branch, GatherAll, scatter
from threshold.replay import check_deterministic, load_journals, replay_runs
from threshold.replay._fast import as_json
from threshold.replay._lean import from_journal, read_sqlite
from threshold.runtime import Crossing

AGENT = "fast.agent"


class Plan(BaseModel):
    pct: int
    months: int


class Note(BaseModel):
    text: str


def _cap(limit: int, version: str) -> Any:
    @verifier("cap", version=version)
    def cap(plan: Plan, ctx: VerifyContext) -> Accept | Reject:
        if plan.pct <= limit:
            return Accept()
        return Reject("policy.cap", f"{plan.pct} is over {limit}", retryable=False)

    return cap


@verifier("term", version="1")
def term(plan: Plan, ctx: VerifyContext) -> Accept | Reject:
    if plan.months in (12, 24):
        return Accept()
    return Reject("rule.term", f"{plan.months} is not a term", hint="12 or 24")


OUTSIDE: list[str] = []  # what real commits and effects touched


async def _send(plan: Plan, effect: EffectContext) -> dict[str, Any]:
    OUTSIDE.append(effect.key)
    return {"sent": effect.key, "pct": plan.pct}


def _plan(cap: Any) -> Boundary[Plan]:
    return Boundary("plan", output=Plan, prompt=Prompt("plan", "1", "Plan for {n}."),
                    verifiers=[cap, term], commit=_send)


PLAN = _plan(_cap(30, "1"))
NOTE = Boundary("note", output=Note, prompt=Prompt("note", "1", "Note for {n}."))
HUMAN = Boundary("human", output=Plan, prompt=Prompt("plan", "1", "Plan for {n}."),
                 verifiers=[_cap(30, "1")], commit=_send,
                 on_reject=RejectPolicy(routes={"policy.": Escalate(role="lead")}))
VARIANTS: dict[str, Any] = {
    "order": None, "inputs": None, "event": None, "result": None,
    "verifier_version": _plan(_cap(30, "2")),  # same rule, new version
    "verifier_rule": _plan(_cap(50, "1")),  # same version, another decision
}
FAILED_ONCE: set[int] = set()


def answers(request: Any) -> Any:
    """Per customer n: a schema break, a retryable reject, a policy abort, a transport
    failure or a refusal first, then a good plan."""
    n = int(str(request.inputs["n"]).split(".")[0])
    if request.prompt_id == "note":
        return json.dumps({"text": f"note {n}"})
    retry = bool(request.feedback)
    if n % 5 == 0 and not retry:
        return "{not json"
    if n % 5 == 1 and not retry:
        return json.dumps({"pct": 10, "months": 18})
    if n % 5 == 2:
        return json.dumps({"pct": 45, "months": 12})
    if n % 5 == 3 and n not in FAILED_ONCE:
        FAILED_ONCE.add(n)
        return ServerError("HTTP 503")
    if n % 5 == 4 and not retry:
        return Completion(text="", finish_reason="refusal")
    return json.dumps({"pct": 5 + n, "months": 12})


def register(runtime: Runtime, variant: str | None = None) -> None:
    """The agent (``variant`` None), or an altered copy under the same name and version."""
    runtime.models.add("scripted:fast", ScriptedModel(answers))
    plan_boundary = VARIANTS.get(variant) or PLAN

    @runtime.agent(AGENT, version="1")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        n = inp["n"]
        await ctx.event("start", n=n * 2 if variant == "event" else n)
        segment = await ctx.step("read.segment", lambda: "gold")

        async def offer() -> dict[str, Any]:
            if variant == "order":
                note = await ctx.cross(NOTE, {"n": n})
            plan = await ctx.cross(plan_boundary, {"n": n + 100 if variant == "inputs" else n})
            if variant != "order":
                note = await ctx.cross(NOTE, {"n": n})
            return {"plan": plan.outcome, "attempts": plan.attempts, "note": note.outcome}

        first = await ctx.stage("offer", offer)
        await ctx.sleep(timedelta(hours=1))
        reply = await ctx.receive("reply", timeout=timedelta(days=2))

        async def flaky(effect: EffectContext) -> str:
            OUTSIDE.append(effect.key)
            if n % 2:
                raise RuntimeError("mail server down")
            return "mailed"

        try:
            mailed = await ctx.effect("mail", flaky)
        except EffectFailed:
            mailed = "failed"
            await ctx.event("mail.failed")
        if n == 7:
            raise ValueError("customer seven is not served")
        out = {"segment": segment, **first, "reply": reply, "mailed": mailed}
        return {**out, "extra": 1} if variant == "result" else out

    @runtime.agent("fast.human", version="1")
    async def human(ctx: RunContext, inp: dict[str, Any]) -> str:
        crossing = await ctx.cross(HUMAN, {"n": inp["n"]})
        return crossing.outcome

    @runtime.agent("fast.wait", version="1")
    async def wait(ctx: RunContext, inp: dict[str, Any]) -> Any:
        await ctx.event("start", n=inp["n"])
        await ctx.cross(PLAN, {"n": inp["n"]})
        await ctx.sleep(timedelta(hours=1))
        return await ctx.receive("never")

    @runtime.agent("fast.scatter", version="1")
    async def fan_out(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        branches = [Branch(f"p{i}", NOTE, {"n": f"{inp['n']}.{i}"}) for i in range(3)]
        gathered = await scatter(ctx, "notes", branches, gather=GatherAll(), concurrency=2)
        return {"chosen": [o.name for o in gathered.chosen]}

    @runtime.agent("fast.runtime", version="1")
    async def uses_runtime(ctx: RunContext, inp: dict[str, Any]) -> str:
        await ctx.event("start")
        return str(ctx.runtime.default_model)


def _variant(name: str) -> Any:
    return lambda runtime: register(runtime, name)


class Replies:
    """Customers with an even n reply a day after their run starts (one has replied before
    it asks); odd ones never do, so their receive times out."""

    def __init__(self, runtime: Runtime, due: list[tuple[datetime, str]]) -> None:
        self.runtime, self.due = runtime, sorted(due)

    async def next_due(self) -> datetime | None:
        return self.due[0][0] if self.due else None

    async def act(self, now: datetime) -> int:
        done = 0
        while self.due and self.due[0][0] <= now:
            _, run_id = self.due.pop(0)
            await self.runtime.deliver(run_id, "reply", f"{run_id}/reply", {"ok": True})
            done += 1
        return done


def _record(path: Path, runs: int = 10, *, extra: bool = False) -> str:
    url = f"sqlite:///{path}"

    async def go() -> None:
        store = open_store(url)
        clock = VirtualClock()
        runtime = Runtime(store, clock=clock)
        register(runtime)
        due = []
        for n in range(runs):
            run_id = f"fast-{n:02d}"
            await runtime.start(AGENT, {"n": n}, run_id=run_id, model="scripted:fast")
            if n == 0:
                await runtime.deliver(run_id, "reply", f"{run_id}/reply", {"ok": "early"})
            elif n % 2 == 0:
                due.append((clock.now() + timedelta(days=1), run_id))
        if extra:
            await runtime.start("fast.human", {"n": 2}, run_id="human-2", model="scripted:fast")
            await runtime.start("fast.runtime", {"n": 0}, run_id="runtime-0",
                                model="scripted:fast")
        runtime.actors.append(Replies(runtime, due))
        await runtime.run_until_idle()
        for approval in await store.list_approvals(status="pending"):
            await runtime.decide(approval.approval_id, approve=True, principal="ann@lead")
        await runtime.run_until_idle()
        await store.close()

    asyncio.run(go())
    return url


def _replay(url: str, register_fn: Any, *, fast: bool = True,
            run_ids: list[str] | None = None) -> Any:
    async def go() -> Any:
        store = open_store(url)
        try:
            return await replay_runs(store, run_ids, register_fn, fast=fast)
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _record(tmp_path_factory.mktemp("fast") / "fast.db", extra=True)


def test_recording_covers_what_the_fast_path_replays(recorded: str) -> None:
    """The journals hold schema breaks, retries, aborts, transport errors, refusals, timers,
    early, late and missing replies, failed effects and a failed run."""
    journals = {j.run_id: j for j in _load_all(recorded)}
    codes = {v.code for j in journals.values() for c in j.crossings.values()
             for v in c.verdicts}
    assert {"schema.not_json", "rule.term", "policy.cap", "model.refusal"} <= codes
    kinds = {a.kind for j in journals.values() for c in j.crossings.values() for a in c.attempts}
    assert kinds == {"proposal", "transport_error"}
    assert {c.crossing.status for c in journals["fast-02"].crossings.values()} >= {"aborted"}
    replies = [j.steps[7].result for j in journals.values() if j.run.agent == AGENT]
    assert None in replies and any(r is not None for r in replies)
    assert journals["fast-07"].run.status == "failed"
    assert any(e.status == "failed" for j in journals.values() for e in j.effects)
    assert all(j.timers for j in journals.values() if j.run.agent == AGENT)


def test_fast_path_reproduces_clean_runs_as_the_full_engine_does(recorded: str) -> None:
    """Every run of the agent replays clean on the fast path, with the same compared steps,
    crossings and shadow effects as the full engine, and nothing real is touched."""
    ids = [f"fast-{n:02d}" for n in range(10)]
    touched = list(OUTSIDE)
    fast = _replay(recorded, register, run_ids=ids)
    full = _replay(recorded, register, fast=False, run_ids=ids)
    assert touched == OUTSIDE
    assert [o.path for o in fast] == ["fast"] * 10
    assert [o.path for o in full] == ["full"] * 10
    assert all(o.diff.classification == "identical" for o in fast + full)
    for f, g in zip(fast, full, strict=True):
        assert f.diff.compared_steps == g.diff.compared_steps
        assert [c.boundary for c in f.diff.crossings] == [c.boundary for c in g.diff.crossings]
        assert [(e.key, e.step, e.action, e.payload_hash, e.recorded) for e in f.shadow] == \
            [(e.key, e.step, e.action, e.payload_hash, e.recorded) for e in g.shadow]
        assert (f.replayed.run.status, f.replayed.run.result, f.replayed.run.error) == \
            (g.replayed.run.status, g.replayed.run.result, g.replayed.run.error)
    assert fast[0].original.partial and not full[0].original.partial


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_altered_code_diverges_at_the_full_engines_step(recorded: str, variant: str) -> None:
    """Boundary order, crossing inputs, a verifier's version or rule, an event's data and the
    run's result, changed in place: the fast path stops at a step the full engine also finds
    diverging, and check_deterministic raises the full engine's error, first step and all
    (a stage's result, compared at the stage's own position, can come before the step
    inside it where the code turned)."""
    altered = _variant(variant)
    fast = _replay(recorded, altered, run_ids=["fast-02"])[0]
    full = _replay(recorded, altered, fast=False, run_ids=["fast-02"])[0]
    assert full.diff.first is not None
    assert fast.path == "full" and fast.fallback is not None
    assert fast.fallback.step in {d.seq for d in full.diff.diffs}
    assert fast.diff.first == full.diff.first
    errors = []
    for use_fast in (True, False):
        async def check(store: Any, use_fast: bool = use_fast) -> None:
            await check_deterministic(store, ["fast-02"], altered, fast=use_fast)

        with pytest.raises(NondeterminismError) as caught:
            asyncio.run(_with_store(recorded, check))
        errors.append((caught.value.step, str(caught.value)))
    assert errors[0] == errors[1]


_TAMPER = {
    "code": "UPDATE verdicts SET code = 'policy.other' WHERE rowid = (SELECT min(rowid) "
            "FROM verdicts WHERE code = 'policy.cap') RETURNING crossing_id",
    "missing": "DELETE FROM verdicts WHERE rowid = (SELECT min(rowid) FROM verdicts WHERE "
               "verdict = 'accept' AND verifier != 'schema') RETURNING crossing_id",
    "extra": "INSERT INTO verdicts SELECT v.crossing_id, a.attempt, v.verifier, "
             "v.verifier_version, v.verdict, v.proposal_hash, v.at, v.code, v.message, "
             "v.retryable, v.hint, v.field, v.decided_by FROM attempts a JOIN verdicts v "
             "ON v.crossing_id = a.crossing_id WHERE a.kind = 'transport_error' LIMIT 1 "
             "RETURNING crossing_id",
}


@pytest.mark.parametrize("tamper", sorted(_TAMPER))
def test_altered_verdict_rows_go_to_the_full_engine(recorded: str, tmp_path: Path,
                                                    tamper: str) -> None:
    """A journal whose verdict rows were changed, removed or added (for a transport error)
    is never clean on the fast path: the full engine replays it and finds the same first
    diverging step as on its own."""
    copy = tmp_path / "tampered.db"
    with sqlite3.connect(recorded.removeprefix("sqlite:///")) as source, \
            sqlite3.connect(copy) as target:
        source.backup(target)
        crossing_id = target.execute(_TAMPER[tamper]).fetchone()[0]
    run_id = crossing_id.rsplit("/", 1)[0]
    url = f"sqlite:///{copy}"
    fast = _replay(url, register, run_ids=[run_id])[0]
    full = _replay(url, register, fast=False, run_ids=[run_id])[0]
    assert fast.path == "full" and fast.fallback is not None
    assert full.diff.first is not None
    assert fast.diff.first == full.diff.first


def _load_all(url: str) -> Any:
    """Every journal in ``url``, through the Store protocol."""
    return asyncio.run(_with_store(url, lambda store: load_journals(store, None)))


async def _with_store(url: str, fn: Any) -> Any:
    store = open_store(url)
    try:
        return await fn(store)
    finally:
        await store.close()


def _record_one(url: str, agent: str, inp: dict[str, Any], run_id: str) -> None:
    """Run one run of ``agent`` as far as it goes, on the scripted model."""
    async def record(store: Any) -> None:
        runtime = Runtime(store, clock=VirtualClock())
        register(runtime)
        await runtime.start(agent, inp, run_id=run_id, model="scripted:fast")
        await runtime.run_until_idle()

    asyncio.run(_with_store(url, record))


def test_strict_comparison_names_what_changed(recorded: str) -> None:
    """A verifier version bump or other crossing inputs diverge at the crossing, with the
    versions or input digests on both sides of the report."""
    version = _replay(recorded, _variant("verifier_version"), run_ids=["fast-03"])[0]
    first = version.diff.first
    assert first is not None and first.seq == 4 and "definition" in first.aspects
    assert "cap@2" in first.replayed and "cap@1" in first.recorded
    inputs = _replay(recorded, _variant("inputs"), run_ids=["fast-03"])[0]
    first = inputs.diff.first
    assert first is not None and first.aspects == ("inputs",) and first.seq == 4
    assert first.replayed != first.recorded


def test_unsupported_runs_fall_back_to_the_full_engine(recorded: str) -> None:
    """A crossing a human decided and code that reaches for ctx.runtime replay clean on the
    full engine, each with the reason the fast path handed it on."""
    outcomes = {o.original.run_id: o for o in _replay(recorded, register,
                                                      run_ids=["human-2", "runtime-0"])}
    human, runtime = outcomes["human-2"], outcomes["runtime-0"]
    assert human.original.run.result == "committed"
    assert human.path == "full" and human.fallback is not None
    assert "human" in human.fallback.reason
    assert runtime.path == "full" and runtime.fallback is not None
    assert "ctx.runtime" in runtime.fallback.reason
    assert all(o.diff.classification == "identical" for o in outcomes.values())


def test_in_flight_run_replays_fast_up_to_its_journal(tmp_path: Path) -> None:
    """A run still waiting for a message replays clean on the fast path, compared only as
    far as its journal goes, as the full engine compares it."""
    url = f"sqlite:///{tmp_path / 'flight.db'}"

    _record_one(url, "fast.wait", {"n": 11}, "flight")
    fast = _replay(url, register)[0]
    full = _replay(url, register, fast=False)[0]
    assert fast.original.run.status == "waiting"
    assert fast.path == "fast" and fast.diff.prefix_only
    assert fast.diff.compared_steps == full.diff.compared_steps == 3
    assert full.diff.classification == "identical"


def test_scatter_positions_taken_ahead_replay_fast(tmp_path: Path) -> None:
    """Scatter-gather takes its crossings' positions ahead and runs them concurrently: the
    fast path verifies every branch, as the full engine re-executes every branch."""
    url = f"sqlite:///{tmp_path / 'scatter.db'}"

    _record_one(url, "fast.scatter", {"n": 3}, "fan")
    fast = _replay(url, register)[0]
    full = _replay(url, register, fast=False)[0]
    assert fast.original.run.result == {"chosen": ["p0", "p1", "p2"]}
    assert fast.path == "fast" and fast.diff.classification == "identical"
    assert [c.boundary for c in fast.diff.crossings] == \
        [c.boundary for c in full.diff.crossings] == ["note"] * 3


def test_lean_reader_reads_what_the_store_protocol_reads(recorded: str) -> None:
    """The direct SQLite reader and the Store protocol give the fast path the same journal
    (a schema change that breaks the reader shows here, not as slow or wrong replays)."""
    by_protocol = {j.run_id: from_journal(j) for j in _load_all(recorded)}
    direct = read_sqlite(recorded.removeprefix("sqlite:///"), None)
    assert [j.run_id for j in direct] == list(by_protocol)
    for lean in direct:
        other = by_protocol[lean.run_id]
        assert (lean.run, lean.steps, lean.effects, lean.timers, lean.messages, lean.blocked) \
            == (other.run, other.steps, other.effects, other.timers, other.messages,
                other.blocked)
        assert set(lean.crossings) == set(other.crossings)
        for seq, c in lean.crossings.items():
            o = other.crossings[seq]
            assert json.loads(c.verifiers) == o.verifiers
            assert (c.status, c.boundary_version, c.action, c.attempts) == \
                (o.status, o.boundary_version, o.action, o.attempts)
            assert c.crossing_id == o.crossing_id and c.verdicts == o.verdicts
    one = read_sqlite(recorded.removeprefix("sqlite:///"), ["fast-03"])
    assert [j.run_id for j in one] == ["fast-03"] and one[0].steps == direct[3].steps


def test_cli_replay_reports_the_paths(recorded: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`threshold replay --all` replays clean and says how many runs took each path;
    --full-engine replays all of them on the full engine."""
    agents = "test_fast_replay:register"
    assert main(["replay", "--all", "--db", recorded, "--agents", agents]) == 0
    out = capsys.readouterr().out
    assert "12/12 run(s) replayed clean (10 verify-only, 2 full engine)" in out
    assert main(["replay", "--all", "--db", recorded, "--agents", agents, "--json",
                 "--full-engine"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["clean"], data["paths"]) == (12, {"fast": 0, "full": 12})


def test_fast_comparison_is_the_journals_crossing_json() -> None:
    """What the fast path compares a crossing by is exactly Crossing.to_json, for committed
    and aborted crossings alike (a new field in to_json must show up here)."""
    plan = Plan(pct=5, months=12)
    committed = Crossing("plan", "committed", 2, plan, {"sent": "k"}, (), "", None, "r/3",
                         "abc")
    aborted = Crossing("plan", "aborted", 1, None, None,
                       (Reject("policy.cap", "over", False, "lower", "pct"),), "over", None,
                       "r/4", None)
    for crossing in (committed, aborted):
        dumped = None if crossing.value is None else crossing.value.model_dump(mode="json")
        assert as_json(crossing, dumped, crossing.crossing_id) == crossing.to_json()


def test_lean_reader_orders_attempts_written_out_of_order(recorded: str, tmp_path: Path) -> None:
    """Attempt rows stored out of attempt order (the reader takes them in table order) are
    read back in attempt order, and their run still replays clean on the fast path."""
    copy = tmp_path / "reordered.db"
    with sqlite3.connect(recorded.removeprefix("sqlite:///")) as source, \
            sqlite3.connect(copy) as target:
        source.backup(target)
        crossing_id = target.execute(
            "SELECT crossing_id FROM attempts GROUP BY crossing_id HAVING count(*) > 1 "
            "ORDER BY crossing_id LIMIT 1").fetchone()[0]
        rows = target.execute("SELECT * FROM attempts WHERE crossing_id = ? "
                              "ORDER BY attempt DESC", (crossing_id,)).fetchall()
        target.execute("DELETE FROM attempts WHERE crossing_id = ?", (crossing_id,))
        target.executemany(f"INSERT INTO attempts VALUES ({','.join('?' * len(rows[0]))})",
                           rows)
    run_id = crossing_id.rsplit("/", 1)[0]
    lean = next(j for j in read_sqlite(str(copy), None) if j.run_id == run_id)
    crossing = next(c for c in lean.crossings.values() if c.crossing_id == crossing_id)
    assert [a.attempt for a in crossing.attempts] == list(range(1, len(rows) + 1))
    outcomes = {o.original.run_id: o for o in _replay(f"sqlite:///{copy}", register)}
    assert outcomes[run_id].path == "fast"
    assert outcomes[run_id].diff.classification == "identical"


def test_registering_code_that_uses_the_store_still_replays(recorded: str) -> None:
    """The runtime that only collects agent definitions opens its store when the registering
    code uses it, so such code replays as before."""
    seen: list[str] = []

    def uses_store(runtime: Runtime) -> None:
        seen.append(runtime.store.url)
        register(runtime)

    outcomes = _replay(recorded, uses_store, run_ids=["fast-03"])
    assert seen and seen[0] == "memory://"
    assert [o.path for o in outcomes] == ["fast"]
    assert outcomes[0].diff.classification == "identical"
