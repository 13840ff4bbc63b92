"""P2, scatter-gather: fan out to N proposers or workers at once, then gather.

``scatter(ctx, name, branches, gather=..., concurrency=...)`` runs each branch as a crossing
(its own boundary, inputs and model), at most ``concurrency`` at a time, and gathers in one
of three modes:

- ``GatherAll()``: wait for every branch; the accepted ones are chosen, in branch order.
- ``FirstK(k)``: stop once ``k`` branches were accepted; the rest are cancelled. The chosen
  ones are the first ``k`` accepted in branch order.
- ``Vote(k, key, fallback)``: the verifiers are the arbiter: only accepted proposals vote,
  and they agree when ``key(value)`` is equal. The first group to reach ``k`` votes wins
  (the rest are cancelled). Without a quorum the declared fallback applies: ``"abort"``
  raises ``GatherFailed``; ``"highest_priority"`` takes the accepted proposal of the
  earliest branch; ``"escalate"`` suspends the run on ``ctx.receive(channel)`` until a
  person or a supervisor delivers ``{"choose": <branch>, "by": ...}`` or
  ``{"abort": true, "by": ...}``.

Branch order is priority order. Journal positions are taken in branch order before any
branch starts, and branches that time out or are cancelled are closed at their positions,
so a resumed run gathers the same result. Branches with a commit (workers) may only be
gathered with ``GatherAll`` and no timeout: a commit is never interrupted.

The journal gets ``fanout.started``, one ``fanout.branch`` per branch, ``fanout.vote`` for
votes, ``fanout.escalated``/``fanout.resolved`` for a human decision, then
``fanout.gathered`` or ``fanout.failed``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, NoReturn, TypeVar

from pydantic import BaseModel

from threshold.boundary import Boundary
from threshold.errors import ConfigError, GatherFailed
from threshold.ids import canonical_json
from threshold.patterns._coordination import (
    BranchResult,
    BranchSpec,
    BranchStatus,
    describe_coordination,
    run_branches,
)
from threshold.runtime import Crossing, RunContext

M = TypeVar("M", bound=BaseModel)

__all__ = [
    "Branch",
    "BranchOutcome",
    "FirstK",
    "Gather",
    "GatherAll",
    "Gathered",
    "Vote",
    "describe_coordination",
    "scatter",
]

RESOLUTION_CHANNEL = "fanout.resolution"


@dataclass(frozen=True, slots=True)
class Branch(Generic[M]):
    """One proposer (or worker): a boundary, its inputs, and optionally its model spec."""

    name: str
    boundary: Boundary[M]
    inputs: Mapping[str, Any]
    model: str | None = None
    facts: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class GatherAll:
    kind: Literal["all"] = "all"


@dataclass(frozen=True, slots=True)
class FirstK:
    k: int
    kind: Literal["first_k"] = "first_k"


@dataclass(frozen=True, slots=True)
class Vote:
    """``k`` accepted proposals with equal ``key(value)`` decide; else ``fallback``."""

    k: int
    key: Callable[[Any], Hashable]
    fallback: Literal["escalate", "abort", "highest_priority"] = "abort"
    channel: str = RESOLUTION_CHANNEL
    kind: Literal["vote"] = "vote"


Gather = GatherAll | FirstK | Vote


@dataclass(frozen=True, slots=True)
class BranchOutcome(Generic[M]):
    name: str
    index: int
    status: BranchStatus
    crossing: Crossing[M]
    key: str | None = None  # the vote key (canonical JSON), for accepted votes

    @property
    def value(self) -> M | None:
        return self.crossing.value


@dataclass(frozen=True, slots=True)
class Gathered(Generic[M]):
    """Every branch's outcome (branch order), the chosen ones and what decided."""

    fanout: str
    branches: tuple[BranchOutcome[M], ...]
    chosen: tuple[BranchOutcome[M], ...]
    decided_by: str

    @property
    def values(self) -> list[M]:
        return [c.crossing.value for c in self.chosen if c.crossing.value is not None]

    @property
    def value(self) -> M:
        """The first chosen value (the vote's winner)."""
        if not self.chosen or self.chosen[0].crossing.value is None:
            raise GatherFailed(self.fanout, "nothing was chosen")
        return self.chosen[0].crossing.value


async def scatter(
    ctx: RunContext,
    name: str,
    branches: Sequence[Branch[M]],
    *,
    gather: Gather | None = None,
    concurrency: int = 8,
    timeout: float | None = None,
) -> Gathered[M]:
    """Fan out ``branches`` (see the module docstring); ``timeout`` is per branch, in
    seconds of wall time. Raises ``GatherFailed`` when the gather cannot decide."""
    mode = gather or GatherAll()
    _validate(name, branches, mode, concurrency, timeout)
    k = 0 if isinstance(mode, GatherAll) else mode.k
    await ctx.event("fanout.started", fanout=name, mode=mode.kind, k=k or None, n=len(branches),
                    branches=[b.name for b in branches], concurrency=concurrency,
                    timeout_s=timeout,
                    fallback=mode.fallback if isinstance(mode, Vote) else None)
    specs = [BranchSpec(b.name, b.boundary, b.inputs, b.model, b.facts, timeout)
             for b in branches]
    results = await run_branches(ctx, specs, concurrency=concurrency, stop=_stop_rule(mode),
                                 cancel_reason=f"{name} was decided without it")
    outcomes = tuple(_outcome(r, mode) for r in results)
    for o in outcomes:
        await ctx.event("fanout.branch", fanout=name, branch=o.name, index=o.index,
                        status=o.status, attempts=o.crossing.attempts,
                        crossing_id=o.crossing.crossing_id, key=o.key,
                        value=None if o.value is None else o.value.model_dump(mode="json"),
                        rejects=[r.code for r in o.crossing.rejects],
                        reason=o.crossing.reason or None)
    accepted = [o for o in outcomes if o.status == "accepted"]
    if isinstance(mode, GatherAll):
        return await _gathered(ctx, name, outcomes, accepted, "all")
    if isinstance(mode, FirstK):
        if len(accepted) < mode.k:
            await _fail(ctx, name, f"{len(accepted)} of {len(outcomes)} branches were "
                                   f"accepted, {mode.k} needed")
        return await _gathered(ctx, name, outcomes, accepted[: mode.k], f"first {mode.k}")
    return await _vote(ctx, name, mode, outcomes, accepted)


def _validate(name: str, branches: Sequence[Branch[Any]], mode: Gather,
              concurrency: int, timeout: float | None) -> None:
    names = [b.name for b in branches]
    if not branches or len(set(names)) != len(names):
        raise ConfigError(f"fan-out {name}: needs at least one branch, names unique: {names}")
    if concurrency < 1:
        raise ConfigError(f"fan-out {name}: concurrency must be at least 1")
    if not isinstance(mode, GatherAll) and not 1 <= mode.k <= len(branches):
        raise ConfigError(f"fan-out {name}: k={mode.k} must be between 1 and {len(branches)}")
    committing = [b.name for b in branches if b.boundary.commit is not None]
    if committing and isinstance(mode, Vote):
        raise ConfigError(f"fan-out {name}: a vote gathers proposals; branches "
                          f"{committing} have a commit")
    if committing and (timeout is not None or isinstance(mode, FirstK)):
        # Interrupting a crossing mid-commit would leave an effect of unknown fate.
        raise ConfigError(f"fan-out {name}: branches {committing} have a commit and cannot "
                          "be timed out or cancelled; gather them with GatherAll()")


def _vote_key(mode: Gather, value: BaseModel) -> str:
    assert isinstance(mode, Vote)
    return canonical_json(mode.key(value))


def _stop_rule(mode: Gather) -> Callable[[Mapping[int, Crossing[Any]]], bool] | None:
    if isinstance(mode, FirstK):
        return lambda done: sum(c.committed for c in done.values()) >= mode.k
    if isinstance(mode, Vote):
        def quorum(done: Mapping[int, Crossing[Any]]) -> bool:
            counts: dict[str, int] = {}
            for c in done.values():
                if c.committed and c.value is not None:
                    key = _vote_key(mode, c.value)
                    counts[key] = counts.get(key, 0) + 1
            return any(n >= mode.k for n in counts.values())
        return quorum
    return None


def _outcome(result: BranchResult[M], mode: Gather) -> BranchOutcome[M]:
    value = result.crossing.value
    key = None
    if isinstance(mode, Vote) and result.status == "accepted" and value is not None:
        key = _vote_key(mode, value)
    return BranchOutcome(result.label, result.index, result.status, result.crossing, key)


async def _vote(ctx: RunContext, name: str, mode: Vote, outcomes: tuple[BranchOutcome[M], ...],
                accepted: list[BranchOutcome[M]]) -> Gathered[M]:
    groups: dict[str, list[BranchOutcome[M]]] = {}
    for o in accepted:
        assert o.key is not None
        groups.setdefault(o.key, []).append(o)
    # The largest group wins; among equals, the one holding the earliest branch.
    best = min(groups.values(), key=lambda g: (-len(g), g[0].index), default=None)
    quorum = best is not None and len(best) >= mode.k
    await ctx.event("fanout.vote", fanout=name, k=mode.k, voters=len(accepted),
                    groups={key: [o.name for o in g] for key, g in groups.items()},
                    outcome="quorum" if quorum else "no_quorum",
                    winner=best[0].key if quorum and best else None,
                    fallback=None if quorum else mode.fallback)
    if quorum and best is not None:
        return await _gathered(ctx, name, outcomes, best, f"quorum {len(best)} of "
                                                         f"{len(outcomes)}")
    if not accepted:
        await _fail(ctx, name, f"no proposal was accepted (fallback {mode.fallback} has "
                               "nothing to choose from)")
    if mode.fallback == "highest_priority":
        return await _gathered(ctx, name, outcomes, accepted[:1], "fallback highest_priority")
    if mode.fallback == "abort":
        await _fail(ctx, name, f"no {mode.k} accepted proposals agreed")
    chosen, by = await _escalate(ctx, name, mode.channel, accepted)
    if chosen is None:
        await _fail(ctx, name, f"aborted by {by} after no quorum")
    return await _gathered(ctx, name, outcomes, [chosen], f"human {by}")


async def _escalate(ctx: RunContext, name: str, channel: str,
                    accepted: list[BranchOutcome[M]]) -> tuple[BranchOutcome[M] | None, str]:
    """Suspend until a valid decision arrives; an invalid one is journaled and ignored."""
    by_name = {o.name: o for o in accepted}
    await ctx.event("fanout.escalated", fanout=name, channel=channel,
                    candidates=list(by_name))
    while True:
        payload = await ctx.receive(channel)
        error = _check_resolution(payload, by_name)
        if error is None:
            break
        await ctx.event("fanout.resolution_invalid", fanout=name,
                        payload=payload, error=error)
    choose = payload.get("choose")
    await ctx.event("fanout.resolved", fanout=name, choose=choose, by=payload["by"],
                    note=payload.get("note"))
    return (None if choose is None else by_name[choose]), str(payload["by"])


def _check_resolution(payload: Any, candidates: Mapping[str, Any]) -> str | None:
    if not isinstance(payload, dict) or not isinstance(payload.get("by"), str):
        return "expected an object with 'by' (who decided)"
    if payload.get("abort") is True and payload.get("choose") is None:
        return None
    if payload.get("choose") not in candidates:
        return f"'choose' must be one of {sorted(candidates)} (or send 'abort': true)"
    return None


async def _gathered(ctx: RunContext, name: str, outcomes: tuple[BranchOutcome[M], ...],
                    chosen: Sequence[BranchOutcome[M]], decided_by: str) -> Gathered[M]:
    await ctx.event("fanout.gathered", fanout=name, chosen=[o.name for o in chosen],
                    decided_by=decided_by)
    return Gathered(name, outcomes, tuple(chosen), decided_by)


async def _fail(ctx: RunContext, name: str, reason: str) -> NoReturn:
    await ctx.event("fanout.failed", fanout=name, reason=reason)
    raise GatherFailed(name, reason)
