"""Deterministic replay: re-executing runs against their journals with recorded proposals."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from golden import agents as golden
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
from threshold.errors import NondeterminismError, ServerError
from threshold.replay import ReplaySpec, check_deterministic, load_journals, replay_runs
from threshold.replay._export import (
    export_journals,
    import_journals,
    parse_journals,
    read_journals,
)

GOLDEN = Path(__file__).parent / "golden" / "deterministic.json"


def _golden_store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'golden.db'}"

    async def go() -> None:
        store = open_store(url)
        assert await import_journals(store, read_journals(GOLDEN)) == 12
        await store.close()

    asyncio.run(go())
    return url


def _run(url: str, fn: Any) -> Any:
    async def go() -> Any:
        store = open_store(url)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def test_golden_journal_covers_human_decisions_fallbacks_and_transport_errors() -> None:
    """The checked-in golden journal holds what replay must put back: approvals, denials,
    SLA fallbacks, inbox replies, reminders and transport failures."""
    journals = read_journals(GOLDEN)
    decided = {(a.status, a.decided_by) for j in journals for a in j.approvals}
    assert {("approved", "lee@pricing_lead"), ("denied", "lee@pricing_lead"),
            ("timed_out", "sla-fallback")} <= decided
    kinds = {a.kind for j in journals for c in j.crossings.values() for a in c.attempts}
    assert kinds == {"proposal", "transport_error"}
    assert any(m.channel == "customer.reply" for j in journals for m in j.messages)
    assert any(s.name == "mail.reminder" for j in journals for s in j.steps.values())


def test_golden_journal_replays_clean(tmp_path: Path) -> None:
    """The agent code the golden journal was recorded with reproduces every verdict,
    commit and final state of all twelve runs."""
    outcomes = _run(_golden_store(tmp_path),
                    lambda s: check_deterministic(s, None, golden.register))
    assert len(outcomes) == 12
    assert all(o.diff.classification == "identical" for o in outcomes)
    assert all(not o.unapplied for o in outcomes)
    # The replayed journal is not a copy: its crossings were proposed and verified again.
    approved = next(o for o in outcomes if o.original.run_id == "golden-03")
    human = [v for c in approved.replayed.crossings.values() for v in c.verdicts
             if v.verifier == "human"]
    assert [(v.verdict, v.decided_by) for v in human] == [("accept", "lee@pricing_lead")]


def test_altered_agent_diverges_at_step_4(tmp_path: Path) -> None:
    """Version 1 edited in place (a note after the offer) fails replay at step 4, naming both."""
    with pytest.raises(NondeterminismError) as caught:
        _run(_golden_store(tmp_path),
             lambda s: check_deterministic(s, None, golden.register_altered))
    error = caught.value
    assert (error.run_id, error.step) == ("golden-00", 4)
    assert "event:audit.note" in error.expected and "event:transition" in error.recorded


def test_other_model_diverges_at_the_offer_crossing(tmp_path: Path) -> None:
    """Replayed under sim:v2, every golden run first diverges at its offer crossing, step 3."""
    outcomes = _run(_golden_store(tmp_path),
                    lambda s: replay_runs(s, None, golden.register, ReplaySpec(model="sim:v2")))
    firsts = {o.diff.first.seq for o in outcomes if o.diff.first is not None}
    assert firsts == {3}
    assert outcomes[0].nondeterminism() is not None


def test_export_import_round_trip_is_lossless(tmp_path: Path) -> None:
    """A journal imported from its JSON export exports to the same JSON again."""
    url = _golden_store(tmp_path)
    again = _run(url, load_journals)
    assert export_journals(again) == json.loads(GOLDEN.read_text())
    with pytest.raises(Exception, match=r"not a threshold\.journal export"):
        parse_journals({"format": "other"})


# --- live runs ----------------------------------------------------------------------------


class Pick(BaseModel):
    pct: int


LIMIT = {"pct": 30}  # the rule the verifier enforces; a test moves it


@verifier("cap", version="1")
def cap(pick: Pick, ctx: VerifyContext) -> Accept | Reject:
    if pick.pct <= LIMIT["pct"]:
        return Accept()
    return Reject("policy.cap", f"over {LIMIT['pct']}", retryable=False)


OUTSIDE: list[str] = []  # what a real commit touches
WORLD = {"segment": "gold"}  # what a ctx.step reads


async def _commit(pick: Pick, effect: EffectContext) -> dict[str, Any]:
    OUTSIDE.append(effect.key)
    return {"ok": effect.key}


PICK = Boundary("pick", output=Pick, prompt=Prompt("pick", "1", "Pick for {n}."),
                verifiers=[cap], commit=_commit,
                on_reject=RejectPolicy(routes={"policy.": Escalate(role="lead")}))


def _live(n_runs: int) -> Any:
    failed: list[int] = []

    def answers(request: Any) -> Any:
        n = int(request.inputs["n"])
        if n == 0 and not failed:
            failed.append(n)
            return ServerError("HTTP 503")  # transport noise: backoff, then a retry
        return json.dumps({"pct": 40 if n % 2 else 10})

    def register(runtime: Runtime) -> None:
        runtime.models.add("scripted:live", ScriptedModel(answers))

        @runtime.agent("live", version="1")
        async def live(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
            segment = await ctx.step("read.segment", lambda: WORLD["segment"])
            crossing = await ctx.cross(PICK, {"n": inp["n"]})
            await ctx.sleep(timedelta(days=1))
            async def note(effect: EffectContext) -> str:
                OUTSIDE.append(effect.key)
                return "noted"

            await ctx.effect("note", note)
            return {"segment": segment, "outcome": crossing.outcome,
                    "by": crossing.decided_by}

    async def record(store: Any) -> None:
        runtime = Runtime(store, clock=VirtualClock())
        register(runtime)
        for n in range(n_runs):
            await runtime.start("live", {"n": n}, run_id=f"live-{n}", model="scripted:live")
        await runtime.run_until_idle()
        for approval in await store.list_approvals(status="pending"):
            await runtime.decide(approval.approval_id, approve=approval.run_id.endswith("1"),
                                 principal="ann@lead", comment="checked")
        await runtime.run_until_idle()

    return register, record


def test_replay_reproduces_live_runs_with_human_decisions(tmp_path: Path) -> None:
    """Runs with escalations decided by a human, transport errors, timers and effects replay
    clean, with the same human verdicts, and without touching the outside world again."""
    register, record = _live(4)
    url = f"sqlite:///{tmp_path / 'live.db'}"
    _run(url, record)
    runs = _run(url, lambda s: s.list_runs())
    assert {r.result["by"] for r in runs} == {None, "ann@lead"}
    assert {r.result["outcome"] for r in runs} == {"committed", "denied"}
    attempts = _run(url, lambda s: s.list_attempts("live-0"))
    assert [a.kind for a in attempts] == ["transport_error", "proposal"]
    touched = list(OUTSIDE)
    WORLD["segment"] = "changed since"  # replay must read the journal, not the world
    outcomes = _run(url, lambda s: check_deterministic(s, None, register))
    assert touched == OUTSIDE
    assert all(o.replayed.run.result == o.original.run.result for o in outcomes)
    assert sum(1 for o in outcomes for e in o.shadow if e.action == "note") == 4
    WORLD["segment"] = "gold"


def test_changed_verifier_is_nondeterminism_at_its_crossing(tmp_path: Path) -> None:
    """A verifier that now decides otherwise is reported at the crossing it decides (step 2)."""
    register, record = _live(2)
    url = f"sqlite:///{tmp_path / 'live.db'}"
    _run(url, record)
    LIMIT["pct"] = 50
    try:
        with pytest.raises(NondeterminismError) as caught:
            _run(url, lambda s: check_deterministic(s, ["live-1"], register))
    finally:
        LIMIT["pct"] = 30
    assert caught.value.step == 2 and "committed" in caught.value.expected


def test_in_flight_run_replays_its_journal_so_far(tmp_path: Path) -> None:
    """A run still waiting for a human replays clean up to where its journal stops."""
    register, _ = _live(2)
    url = f"sqlite:///{tmp_path / 'live.db'}"

    async def only_record(store: Any) -> None:
        runtime = Runtime(store, clock=VirtualClock())
        register(runtime)
        await runtime.start("live", {"n": 1}, run_id="live-1", model="scripted:live")
        await runtime.run_until_idle()

    _run(url, only_record)
    assert _run(url, lambda s: s.get_run("live-1")).status == "waiting"
    outcomes = _run(url, lambda s: check_deterministic(s, None, register))
    assert outcomes[0].diff.prefix_only and outcomes[0].diff.classification == "identical"


def test_cli_deterministic_replay_exit_codes(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`threshold replay --all` exits 0 when every run replays clean, 1 at nondeterminism."""
    url = _golden_store(tmp_path)
    assert main(["replay", "--all", "--db", url, "--agents", "golden.agents:register"]) == 0
    assert "12/12 run(s) replayed clean" in capsys.readouterr().out
    assert main(["replay", "golden-04", "--db", url, "--json",
                 "--agents", "golden.agents:register_altered"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["nondeterministic"][0]["step"] == 4
    assert main(["replay", "--db", url]) == 2  # neither run ids nor --all


def test_demo_agent_replays_by_default(tmp_path: Path) -> None:
    """The shipped demo agent, with SLA fallbacks on its escalations, replays clean."""
    from threshold.apps.demo import register, run_demo

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    _run(url, lambda s: run_demo(s, customers=12, model="sim:chaos"))
    assert main(["replay", "--all", "--db", url]) == 0
    assert len(_run(url, lambda s: check_deterministic(s, None, register))) == 12


def test_all_replays_only_runs_of_the_given_agents(tmp_path: Path) -> None:
    """`--all` on a store shared by several agents replays the runs of the agents it was
    given and leaves the others out, instead of failing on code it does not have."""
    from threshold.apps.demo import run_demo

    url = _golden_store(tmp_path)
    _run(url, lambda s: run_demo(s, customers=3))
    outcomes = _run(url, lambda s: replay_runs(s, None, golden.register))
    assert len(outcomes) == 12 and {o.original.run.agent for o in outcomes} == {golden.AGENT}
