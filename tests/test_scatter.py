"""P2 scatter-gather: bounded concurrent fan-out, gather all / first k / vote with the
verifiers as arbiter, declared fallbacks, and a journal that replays to the same gather."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from threshold import (
    Accept,
    Boundary,
    EffectContext,
    ModelRegistry,
    Prompt,
    Reject,
    RejectPolicy,
    RunContext,
    Runtime,
    VerifyContext,
    VirtualClock,
    open_store,
    verifier,
)
from threshold.errors import ConfigError
from threshold.models import Completion, ModelRequest, ModelSpec
from threshold.patterns.scatter import (
    Branch,
    FirstK,
    GatherAll,
    Gathered,
    Vote,
    describe_coordination,
    scatter,
)


class Offer(BaseModel):
    action: Literal["renew", "churn"]
    discount_pct: int = Field(ge=0, le=100)


@verifier("discount_cap", version="1")
def cap(offer: Offer, ctx: VerifyContext) -> Accept | Reject:
    if offer.discount_pct > 30:
        return Reject("policy.discount_cap", f"{offer.discount_pct}% is over 30%",
                      retryable=False)
    return Accept()


OFFER = Boundary("offer", output=Offer, prompt=Prompt("offer", "1", "Offer for {name}."),
                 verifiers=[cap], on_reject=RejectPolicy(max_attempts=1))


def answer(action: str, pct: int) -> str:
    return f'{{"action": "{action}", "discount_pct": {pct}}}'


@dataclass
class Gauge:
    """Shared by the proposers of one test: calls in flight now, at most, and in total."""

    now: int = 0
    peak: int = 0
    finished: list[str] = field(default_factory=list)


class Paced:
    """A scripted proposer that takes ``delay`` seconds of real time for each answer."""

    def __init__(self, name: str, text: str, delay: float = 0.0,
                 gauge: Gauge | None = None) -> None:
        self._spec = ModelSpec("scripted", name, "1")
        self.text, self.delay, self.gauge = text, delay, gauge or Gauge()
        self.calls = 0

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    async def complete(self, request: ModelRequest) -> Completion:
        self.calls += 1
        self.gauge.now += 1
        self.gauge.peak = max(self.gauge.peak, self.gauge.now)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.gauge.now -= 1
        self.gauge.finished.append(self._spec.name)
        return Completion(text=self.text, served_model=self._spec.id, finish_reason="stop")


Body = Callable[[RunContext], Awaitable[Any]]


def runtime(tmp_path: Path, models: dict[str, Paced], body: Body) -> Runtime:
    registry = ModelRegistry()
    for name, model in models.items():
        registry.add(f"scripted:{name}", model)
    rt = Runtime(open_store(f"sqlite:///{tmp_path / 'runs.db'}"), clock=VirtualClock(),
                 models=registry)

    @rt.agent("fan")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> Any:
        return await body(ctx)

    return rt


def proposers(*names: str) -> list[Branch[Offer]]:
    return [Branch(n, OFFER, {"name": "ada"}, model=f"scripted:{n}") for n in names]


def summary(g: Gathered[Offer]) -> dict[str, Any]:
    return {"chosen": [c.name for c in g.chosen], "decided_by": g.decided_by,
            "values": [v.model_dump() for v in g.values],
            "status": {b.name: b.status for b in g.branches}}


async def run_one(rt: Runtime, run_id: str = "r1") -> Any:
    await rt.start("fan", {}, run_id=run_id)
    await rt.run_until_idle()
    return await rt.store.get_run(run_id)


def by_key(offer: Offer) -> Any:
    return [offer.action, offer.discount_pct]


@pytest.mark.parametrize("bad", ["Sure! here it is: {'action': 'renew'", answer("renew", 80)],
                         ids=["malformed", "out_of_policy"])
def test_vote_decides_when_one_of_three_proposers_errs(tmp_path: Path, bad: str) -> None:
    """Two of three agree after verification; the erring proposer is rejected and does not
    vote, and the vote still decides (2 of 3)."""
    models = {"p1": Paced("p1", answer("renew", 10)), "p2": Paced("p2", bad),
              "p3": Paced("p3", answer("renew", 10))}

    async def body(ctx: RunContext) -> Any:
        g = await scatter(ctx, "offer-vote", proposers("p1", "p2", "p3"),
                          gather=Vote(2, key=by_key), concurrency=3)
        return summary(g)

    rt = runtime(tmp_path, models, body)

    async def scenario() -> None:
        run = await run_one(rt)
        assert run is not None and run.status == "completed", run
        assert run.result == {"chosen": ["p1", "p3"], "decided_by": "quorum 2 of 3",
                              "values": [{"action": "renew", "discount_pct": 10}] * 2,
                              "status": {"p1": "accepted", "p2": "rejected", "p3": "accepted"}}
        (vote,) = await rt.store.list_events("r1", kind="fanout.vote")
        assert vote.data["groups"] == {'["renew",10]': ["p1", "p3"]}
        assert vote.data["voters"] == 2 and vote.data["outcome"] == "quorum"
        kinds = [e.kind for e in await rt.store.list_events("r1")]
        assert kinds == ["fanout.started"] + ["fanout.branch"] * 3 + ["fanout.vote",
                                                                      "fanout.gathered"]

    asyncio.run(scenario())


def disagreeing() -> dict[str, Paced]:
    return {"p1": Paced("p1", answer("renew", 10)), "p2": Paced("p2", answer("renew", 20)),
            "p3": Paced("p3", answer("churn", 0))}


def test_vote_without_quorum_aborts_with_a_typed_error(tmp_path: Path) -> None:
    """Three accepted but different proposals, fallback 'abort': GatherFailed fails the run
    and the journal says why."""
    async def body(ctx: RunContext) -> Any:
        return summary(await scatter(ctx, "offer-vote", proposers("p1", "p2", "p3"),
                                     gather=Vote(2, key=by_key, fallback="abort")))

    rt = runtime(tmp_path, disagreeing(), body)

    async def scenario() -> None:
        run = await run_one(rt)
        assert run is not None and run.status == "failed"
        assert "GatherFailed" in (run.error or "") and "no 2 accepted proposals agreed" in \
            (run.error or "")
        (vote,) = await rt.store.list_events("r1", kind="fanout.vote")
        assert vote.data["outcome"] == "no_quorum" and vote.data["fallback"] == "abort"
        assert len(vote.data["groups"]) == 3

    asyncio.run(scenario())


def test_vote_without_quorum_takes_the_highest_priority(tmp_path: Path) -> None:
    """Fallback 'highest_priority' takes the accepted proposal of the earliest branch."""
    async def body(ctx: RunContext) -> Any:
        return summary(await scatter(ctx, "offer-vote", proposers("p2", "p1", "p3"),
                                     gather=Vote(2, key=by_key, fallback="highest_priority")))

    rt = runtime(tmp_path, disagreeing(), body)

    async def scenario() -> None:
        run = await run_one(rt)
        assert run is not None and run.status == "completed"
        assert run.result["chosen"] == ["p2"]
        assert run.result["decided_by"] == "fallback highest_priority"

    asyncio.run(scenario())


def test_vote_without_quorum_escalates_and_waits_for_a_decision(tmp_path: Path) -> None:
    """Fallback 'escalate' suspends the run until a person chooses; a choice of a branch
    that was not accepted is journaled and ignored."""
    models = disagreeing()
    models["p3"] = Paced("p3", answer("renew", 95))  # out of policy: not a candidate

    async def body(ctx: RunContext) -> Any:
        return summary(await scatter(ctx, "offer-vote", proposers("p1", "p2", "p3"),
                                     gather=Vote(2, key=by_key, fallback="escalate")))

    rt = runtime(tmp_path, models, body)

    async def scenario() -> None:
        run = await run_one(rt)
        assert run is not None and run.status == "waiting"
        (escalated,) = await rt.store.list_events("r1", kind="fanout.escalated")
        assert escalated.data["candidates"] == ["p1", "p2"]
        await rt.deliver("r1", "fanout.resolution", "m1", {"choose": "p3", "by": "eve"})
        await rt.run_until_idle()
        assert (await rt.store.get_run("r1")).status == "waiting"  # type: ignore[union-attr]
        await rt.deliver("r1", "fanout.resolution", "m2",
                         {"choose": "p2", "by": "alice@pricing_lead"})
        await rt.run_until_idle()
        run = await rt.store.get_run("r1")
        assert run is not None and run.status == "completed"
        assert run.result["chosen"] == ["p2"]
        assert run.result["decided_by"] == "human alice@pricing_lead"
        assert models["p1"].calls == models["p2"].calls == 1  # never re-asked on resume

    asyncio.run(scenario())


def test_quorum_cancels_the_slow_proposer_and_a_resumed_run_gathers_the_same(
        tmp_path: Path) -> None:
    """Two fast proposers reach the quorum; the slow third is cancelled and recorded at its
    own position, so the run re-executed after a timer replays without asking it again."""
    models = {"p1": Paced("p1", answer("renew", 10)), "p2": Paced("p2", answer("renew", 10)),
              "slow": Paced("slow", answer("renew", 10), delay=30.0)}
    results: list[dict[str, Any]] = []

    async def body(ctx: RunContext) -> Any:
        g = await scatter(ctx, "offer-vote", proposers("slow", "p1", "p2"),
                          gather=Vote(2, key=by_key))
        results.append(summary(g))
        await ctx.sleep(timedelta(days=1))
        return summary(g)

    rt = runtime(tmp_path, models, body)

    async def scenario() -> None:
        began = time.perf_counter()
        run = await run_one(rt)
        assert time.perf_counter() - began < 10
        assert run is not None and run.status == "completed"
        assert len(results) == 2 and results[0] == results[1] == run.result
        assert run.result["status"] == {"slow": "cancelled", "p1": "accepted",
                                        "p2": "accepted"}
        assert models["slow"].calls == 1
        crossings = await rt.store.list_crossings("r1")
        slow = next(c for c in crossings if c.seq == 2)
        assert slow.status == "failed" and (slow.reason or "").startswith("cancelled:")
        assert slow.attempts == 1  # the call in flight was spent

    asyncio.run(scenario())


def test_first_k_with_bounded_concurrency_keeps_branch_order(tmp_path: Path) -> None:
    """Six branches, at most two in flight; the first three accepted in branch order are
    chosen, and journal positions follow branch order whatever finished first."""
    gauge = Gauge()
    names = [f"b{i}" for i in range(6)]
    models = {n: Paced(n, answer("renew", i), delay=0.05 * (6 - i), gauge=gauge)
              for i, n in enumerate(names)}

    async def body(ctx: RunContext) -> Any:
        g = await scatter(ctx, "quotes", proposers(*names), gather=FirstK(3), concurrency=2)
        return {**summary(g), "ids": [b.crossing.crossing_id for b in g.branches]}

    rt = runtime(tmp_path, models, body)

    async def scenario() -> None:
        run = await run_one(rt)
        assert run is not None and run.status == "completed", run
        assert gauge.peak == 2
        assert gauge.finished[:2] == ["b1", "b0"]  # b1 is faster than b0
        assert run.result["chosen"] == [n for n in names if run.result["status"][n] ==
                                        "accepted"][:3]
        assert len(run.result["chosen"]) == 3
        seqs = [int(i.rsplit("/", 1)[1]) for i in run.result["ids"]]
        assert seqs == sorted(seqs) == list(range(seqs[0], seqs[0] + 6))

    asyncio.run(scenario())


def test_branch_timeout_is_journaled_and_not_retried_on_resume(tmp_path: Path) -> None:
    """A branch slower than the timeout is closed as timed out; after a durable sleep the
    run re-executes, reads that record and does not call the slow model again."""
    models = {"fast": Paced("fast", answer("renew", 5)),
              "slow": Paced("slow", answer("renew", 5), delay=20.0)}

    async def body(ctx: RunContext) -> Any:
        g = await scatter(ctx, "quotes", proposers("fast", "slow"), gather=GatherAll(),
                          timeout=0.2)
        await ctx.sleep(timedelta(hours=1))
        return summary(g)

    rt = runtime(tmp_path, models, body)

    async def scenario() -> None:
        run = await run_one(rt)
        assert run is not None and run.status == "completed"
        assert run.result["status"] == {"fast": "accepted", "slow": "timed_out"}
        assert run.result["chosen"] == ["fast"]
        assert models["slow"].calls == 1
        lines = describe_coordination(await rt.store.list_events("r1"))
        assert "quotes[slow]: timed_out after 1 attempt (timeout: no answer within 0.2 s)" \
            in "\n".join(lines)

    asyncio.run(scenario())


def test_describe_coordination_renders_the_fan_out(tmp_path: Path) -> None:
    """Fan-out, branches, the vote and the gather render as one readable line each."""
    models = {"p1": Paced("p1", answer("renew", 10)), "p2": Paced("p2", "nope"),
              "p3": Paced("p3", answer("renew", 10))}

    async def body(ctx: RunContext) -> Any:
        return summary(await scatter(ctx, "offer-vote", proposers("p1", "p2", "p3"),
                                     gather=Vote(2, key=by_key), concurrency=3))

    rt = runtime(tmp_path, models, body)

    async def scenario() -> list[str]:
        await run_one(rt)
        return describe_coordination(await rt.store.list_events("r1"))

    lines = asyncio.run(scenario())
    assert "offer-vote: fan out to [p1, p2, p3], gather vote 2 of 3 (fallback abort), " \
           "concurrency 3" in lines[0]
    assert 'offer-vote[p1]: accepted after 1 attempt key=["renew",10]' in lines[1]
    assert "offer-vote[p2]: rejected after 1 attempt [schema.not_json]" in lines[2]
    assert 'offer-vote: 2 agreeing needed, 2 accepted voted; ["renew",10]: p1, p3; quorum ' \
           'for ["renew",10]' in lines[4]
    assert "offer-vote: gathered p1, p3 (quorum 2 of 3)" in lines[5]


async def _noop(offer: Offer, e: EffectContext) -> None:
    return None


def test_vote_refuses_committing_branches_and_bad_k() -> None:
    """A vote gathers proposals only, and k must fit the number of branches."""
    committing = Boundary("offer", output=Offer, prompt=Prompt("o", "1", "x"), commit=_noop)

    async def attempt(branches: list[Branch[Offer]], k: int) -> None:
        await scatter(None, "v", branches, gather=Vote(k, key=by_key))  # type: ignore[arg-type]

    with pytest.raises(ConfigError, match="have a commit"):
        asyncio.run(attempt([Branch("a", committing, {})], 1))
    with pytest.raises(ConfigError, match="k=4"):
        asyncio.run(attempt(proposers("a", "b"), 4))


def test_workers_with_commits_gather_all_and_are_never_interrupted(tmp_path: Path) -> None:
    """Branches whose boundaries commit (workers) fan out and each commits once; such
    branches cannot be timed out or cancelled by a first-k gather."""
    sent: list[str] = []

    async def send(offer: Offer, e: EffectContext) -> str:
        sent.append(e.key)
        return e.key

    worker = Boundary("send_offer", output=Offer, prompt=Prompt("o", "1", "Offer for {name}."),
                      verifiers=[cap], commit=send)
    models = {n: Paced(n, answer("renew", 5)) for n in ("w1", "w2", "w3")}
    branches = [Branch(n, worker, {"name": n}, model=f"scripted:{n}") for n in models]

    async def body(ctx: RunContext) -> Any:
        g = await scatter(ctx, "send", branches, concurrency=2)
        return [b.crossing.effect_result for b in g.chosen]

    rt = runtime(tmp_path, models, body)

    async def scenario() -> None:
        run = await run_one(rt)
        assert run is not None and run.status == "completed"
        # Results come in branch order; the effects ran in whatever order the branches
        # reached their commits.
        assert sorted(run.result) == sorted(sent) and len(set(sent)) == 3
        effects = await rt.store.list_effects("r1")
        assert sorted(e.key for e in effects if e.status == "done") == sorted(sent)

    asyncio.run(scenario())
    for gather, timeout in ((FirstK(1), None), (GatherAll(), 1.0)):
        with pytest.raises(ConfigError, match="cannot be timed out or cancelled"):
            asyncio.run(scatter(None, "send", branches, gather=gather,  # type: ignore[arg-type]
                                timeout=timeout))
