"""P1, hierarchical delegation: an orchestrator dispatches typed sub-tasks to sub-agents.

Sub-agents propose; only the orchestrator commits. Concretely:

- **Typed routing.** Each sub-task is a pydantic model; ``routes`` maps its type to a
  sub-agent. A task no route handles raises ``UnroutableTaskError`` before anything runs.
- **Proposers only.** A sub-agent's ``Boundary`` has no commit: its crossing records
  proposals and verdicts and decides nothing in the world. The orchestrator commits the
  merged result through its own boundary or ``ctx.effect``.
- **Deterministic merge.** Results are merged field by field by declared priority
  (``priority``, a ranking of sub-agent names, and optional ``field_priority``), in that
  order whatever order the children finished in. Every disagreement is journaled as a
  ``delegation.conflict`` event naming both values and the winner.
- **One retry budget, owned by the parent.** ``RetryBudget(total)`` caps proposal attempts
  across every child of every dispatch in the run. Each dispatch splits what remains among
  its children; a child's boundary runs under a reject policy built from its share
  (``min(share, its own max_attempts)``) with transport retries off, so a child can never
  spend more than the parent granted. Spending is counted from the journaled crossings,
  so a resumed run counts the same.
- **Timeouts and partial results.** Each child has a wall-clock timeout and a policy for a
  missing result: ``Drop()``, ``Substitute(default)`` or ``FailFast()``. A timed-out child
  is closed at its own journal position as timed out, so a resumed run takes the same
  branch without asking the model again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from threshold.boundary import Abort, Boundary, RejectPolicy, TransportPolicy
from threshold.errors import ConfigError, DelegationFailed, UnroutableTaskError
from threshold.patterns._coordination import (
    BranchResult,
    BranchSpec,
    Conflict,
    describe_coordination,
    merge_by_priority,
    run_branches,
)
from threshold.runtime import Crossing, RunContext

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T", bound=BaseModel)

__all__ = [
    "ChildOutcome",
    "Conflict",
    "Delegation",
    "Drop",
    "FailFast",
    "Orchestrator",
    "PartialPolicy",
    "RetryBudget",
    "SubAgent",
    "Substitute",
    "describe_coordination",
]


# partial-result policies ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Drop:
    """A child without a result is left out of the merge."""

    kind: Literal["drop"] = "drop"


@dataclass(frozen=True, slots=True)
class Substitute:
    """A child without a result contributes this declared default instead."""

    value: BaseModel | Mapping[str, Any]
    kind: Literal["substitute"] = "substitute"


@dataclass(frozen=True, slots=True)
class FailFast:
    """A child without a result fails the whole delegation at once; siblings are cancelled."""

    kind: Literal["fail"] = "fail"


PartialPolicy = Drop | Substitute | FailFast


@dataclass(frozen=True, slots=True)
class SubAgent(Generic[M]):
    """A proposer: a boundary without commit, a timeout in seconds and a partial policy."""

    name: str
    boundary: Boundary[M]
    timeout: float = 30.0
    on_missing: PartialPolicy = field(default_factory=Drop)
    model: str | None = None

    def __post_init__(self) -> None:
        if self.boundary.commit is not None:
            raise ConfigError(f"sub-agent {self.name}: its boundary {self.boundary.name} has a "
                              "commit; sub-agents propose, only the orchestrator commits")
        if self.timeout <= 0:
            raise ConfigError(f"sub-agent {self.name}: timeout must be positive")
        if isinstance(self.on_missing, Substitute):
            self.default()  # a default that does not fit the output type is a config error

    def default(self) -> dict[str, Any]:
        """The declared substitute, validated against the boundary's output type."""
        assert isinstance(self.on_missing, Substitute)
        raw = self.on_missing.value
        data = raw.model_dump(mode="json") if isinstance(raw, BaseModel) else dict(raw)
        try:
            return self.boundary.output.model_validate(data).model_dump(mode="json")
        except ValidationError as exc:
            raise ConfigError(f"sub-agent {self.name}: substitute does not fit "
                              f"{self.boundary.output.__name__}: {exc}") from exc


class RetryBudget:
    """The parent's cap on proposal attempts across all children; create one per run in the
    agent function (it is rebuilt from the journal when the run resumes)."""

    def __init__(self, total: int) -> None:
        if total < 0:
            raise ConfigError(f"retry budget must be >= 0, not {total}")
        self.total = total
        self.spent = 0

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.spent)

    def shares(self, children: int) -> list[int]:
        """Split what remains: equal parts, the remainder to the highest-priority children."""
        if children == 0:
            return []
        base, extra = divmod(self.remaining, children)
        return [base + (1 if i < extra else 0) for i in range(children)]

    def charge(self, attempts: int) -> None:
        self.spent += attempts


ChildStatus = Literal["ok", "rejected", "failed", "timed_out", "cancelled", "budget_exhausted"]
Use = Literal["merged", "dropped", "substituted", "failed"]


@dataclass(frozen=True, slots=True)
class ChildOutcome:
    """What one child gave and what the partial-result policy made of it."""

    child: str
    subagent: str
    task_type: str
    status: ChildStatus
    use: Use
    share: int
    attempts: int
    value: dict[str, Any] | None
    reason: str = ""
    crossing_id: str | None = None
    rejects: tuple[str, ...] = ()  # the reject codes of the last attempt

    def to_json(self) -> dict[str, Any]:
        return {"child": self.child, "subagent": self.subagent, "task_type": self.task_type,
                "status": self.status, "use": self.use, "share": self.share,
                "attempts": self.attempts, "value": self.value, "reason": self.reason,
                "crossing_id": self.crossing_id, "rejects": list(self.rejects)}


@dataclass(frozen=True, slots=True)
class Delegation(Generic[T]):
    """A dispatch's merged result, each child's outcome, the recorded conflicts and the
    attempts it spent from the parent's budget."""

    value: T
    children: tuple[ChildOutcome, ...]
    conflicts: tuple[Conflict, ...]
    attempts: int
    budget_remaining: int


@dataclass(frozen=True, slots=True)
class _Child:
    label: str
    agent: SubAgent[Any]
    task: BaseModel
    rank: tuple[int, int]  # (sub-agent priority, task order)


class Orchestrator(Generic[T]):
    """Routes typed sub-tasks to sub-agents and merges their proposals into ``merge_into``.

    ``priority`` ranks every sub-agent (first wins); ``field_priority`` overrides it for
    named fields (sub-agents it leaves out follow in ``priority`` order)."""

    def __init__(
        self,
        name: str,
        *,
        merge_into: type[T],
        subagents: Sequence[SubAgent[Any]],
        routes: Mapping[type[BaseModel], str],
        priority: Sequence[str],
        field_priority: Mapping[str, Sequence[str]] | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.name = name
        self.merge_into = merge_into
        self.subagents = {a.name: a for a in subagents}
        if len(self.subagents) != len(subagents):
            raise ConfigError(f"orchestrator {name}: sub-agent names must be unique")
        unknown = sorted(set(routes.values()) - set(self.subagents))
        if unknown:
            raise ConfigError(f"orchestrator {name}: routes name unknown sub-agents {unknown}")
        if sorted(priority) != sorted(self.subagents):
            raise ConfigError(f"orchestrator {name}: priority must rank every sub-agent exactly "
                              f"once: got {list(priority)}, sub-agents {sorted(self.subagents)}")
        self.routes = dict(routes)
        self.priority = tuple(priority)
        self.field_priority = {k: tuple(v) for k, v in (field_priority or {}).items()}
        for fname, order in self.field_priority.items():
            if fname not in merge_into.model_fields:
                raise ConfigError(f"orchestrator {name}: field_priority names {fname!r}, not a "
                                  f"field of {merge_into.__name__}")
            if set(order) - set(self.subagents) or len(set(order)) != len(order):
                raise ConfigError(f"orchestrator {name}: field_priority[{fname!r}] must list "
                                  f"known sub-agents once each: {list(order)}")
        self.concurrency = concurrency

    # routing -----------------------------------------------------------------------------
    def route(self, task: BaseModel) -> SubAgent[Any]:
        """The sub-agent for ``task``'s type (or its nearest routed base class)."""
        for cls in type(task).__mro__:
            if cls in self.routes:
                return self.subagents[self.routes[cls]]
        raise UnroutableTaskError(self.name, type(task).__name__,
                                  [t.__name__ for t in self.routes])

    def _children(self, tasks: Sequence[BaseModel]) -> list[_Child]:
        routed = [(i, task, self.route(task)) for i, task in enumerate(tasks)]
        seen: dict[str, int] = {}
        children = []
        for i, task, agent in routed:
            seen[agent.name] = seen.get(agent.name, 0) + 1
            label = agent.name if seen[agent.name] == 1 else f"{agent.name}#{seen[agent.name]}"
            children.append(_Child(label, agent, task, (self.priority.index(agent.name), i)))
        return sorted(children, key=lambda c: c.rank)

    # dispatch ----------------------------------------------------------------------------
    async def delegate(self, ctx: RunContext, tasks: Sequence[BaseModel], *,
                       budget: RetryBudget) -> Delegation[T]:
        """Dispatch ``tasks``, gather the children, merge; raises ``DelegationFailed`` when a
        fail-fast child has no result or the merge does not make a valid ``merge_into``."""
        children = self._children(tasks)
        shares = budget.shares(len(children))
        await ctx.event("delegation.dispatch", orchestrator=self.name,
                        budget_total=budget.total, budget_remaining=budget.remaining,
                        children=[{"child": c.label, "subagent": c.agent.name,
                                   "task_type": type(c.task).__name__, "share": s,
                                   "timeout_s": c.agent.timeout,
                                   "on_missing": c.agent.on_missing.kind}
                                  for c, s in zip(children, shares, strict=True)])
        starved = [c for c, s in zip(children, shares, strict=True) if s == 0]
        fatal = next((c for c in starved if isinstance(c.agent.on_missing, FailFast)), None)
        if fatal is not None:
            reason = f"the retry budget ({budget.total}) is exhausted"
            await ctx.event("delegation.failed", orchestrator=self.name, child=fatal.label,
                            reason=reason)
            raise DelegationFailed(self.name, fatal.label, reason)
        runnable = [(c, s) for c, s in zip(children, shares, strict=True) if s > 0]
        specs = [BranchSpec(c.label, _child_boundary(c.agent.boundary, s),
                            c.task.model_dump(mode="json"), c.agent.model,
                            {"orchestrator": self.name, "child": c.label}, c.agent.timeout)
                 for c, s in runnable]
        fail_fast = {i for i, (c, _) in enumerate(runnable)
                     if isinstance(c.agent.on_missing, FailFast)}

        def stop(done: Mapping[int, Crossing[Any]]) -> bool:
            return any(i in fail_fast and not x.committed for i, x in done.items())

        results = await run_branches(ctx, specs, concurrency=self.concurrency, stop=stop,
                                     cancel_reason="a fail-fast sibling failed")
        by_label = {c.label: (r, s) for (c, s), r in zip(runnable, results, strict=True)}
        outcomes = [_outcome(c, *by_label.get(c.label, (None, 0))) for c in children]
        spent = sum(o.attempts for o in outcomes)
        budget.charge(spent)
        for outcome in outcomes:
            await ctx.event("delegation.child", orchestrator=self.name, **outcome.to_json())
        failed = next((o for o in outcomes if o.use == "failed" and o.status != "cancelled"),
                      None) or next((o for o in outcomes if o.use == "failed"), None)
        if failed is not None:
            reason = f"{failed.status}: {failed.reason}".rstrip(": ")
            await ctx.event("delegation.failed", orchestrator=self.name, child=failed.child,
                            reason=reason)
            raise DelegationFailed(self.name, failed.child, reason)
        return await self._merge(ctx, children, outcomes, spent, budget)

    async def _merge(self, ctx: RunContext, children: list[_Child], outcomes: list[ChildOutcome],
                     spent: int, budget: RetryBudget) -> Delegation[T]:
        ranked = [c.label for c in children]  # already in priority order
        agent_of = {c.label: c.agent.name for c in children}
        contributions = {o.child: o.value for o in outcomes
                         if o.use in ("merged", "substituted") and o.value is not None}

        def ranking(fname: str) -> tuple[list[str], str]:
            order = self.field_priority.get(fname)
            if order is None:
                return ranked, "priority"
            first = {name: n for n, name in enumerate(order)}
            return (sorted(ranked, key=lambda lb: first.get(agent_of[lb], len(first))),
                    f"field_priority[{fname}]")

        merged, conflicts = merge_by_priority(list(self.merge_into.model_fields), contributions,
                                              ranking)
        for conflict in conflicts:
            await ctx.event("delegation.conflict", orchestrator=self.name, **conflict.to_json())
        try:
            value = self.merge_into.model_validate(merged)
        except ValidationError as exc:
            reason = f"the merged result is not a valid {self.merge_into.__name__}: " + "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            await ctx.event("delegation.failed", orchestrator=self.name, child=None,
                            reason=reason)
            raise DelegationFailed(self.name, None, reason) from exc
        await ctx.event("delegation.merged", orchestrator=self.name,
                        value=value.model_dump(mode="json"), attempts=spent,
                        budget_remaining=budget.remaining)
        return Delegation(value, tuple(outcomes), tuple(conflicts), spent, budget.remaining)


def _child_boundary(b: Boundary[M], share: int) -> Boundary[M]:
    """The child's boundary under the parent's budget: it may be stricter, never looser.

    Rejects retry only within ``share``; routed codes abort instead of escalating (only the
    orchestrator escalates); transport failures end the child, because a transport retry
    would spend attempts the parent did not grant."""
    own = b.on_reject
    exhausted = Abort(f"retry share exhausted ({share} of the parent's budget)")
    policy = RejectPolicy(
        max_attempts=max(1, min(share, own.max_attempts)), exhausted=exhausted,
        routes={code: Abort(action.reason or f"routed: {code}")
                for code, action in own.routes.items()})
    return Boundary(b.name, output=b.output, prompt=b.prompt, verifiers=b.verifiers,
                    action=b.action, on_reject=policy,
                    transport=TransportPolicy(max_retries=0, exhausted=Abort("transport")),
                    sampling=b.sampling, version=b.version)


_STATUS: dict[str, ChildStatus] = {"accepted": "ok", "rejected": "rejected",
                                   "failed": "failed", "timed_out": "timed_out",
                                   "cancelled": "cancelled"}


def _outcome(child: _Child, result: BranchResult[Any] | None, share: int) -> ChildOutcome:
    agent = child.agent
    rejects: tuple[str, ...] = ()
    if result is None:
        status: ChildStatus = "budget_exhausted"
        attempts, value, reason, cid = 0, None, "no attempts left in the parent's budget", None
    else:
        c = result.crossing
        status, attempts, reason, cid = _STATUS[result.status], c.attempts, c.reason, \
            c.crossing_id or None
        value = None if c.value is None else c.value.model_dump(mode="json")
        rejects = tuple(r.code for r in c.rejects)
    use: Use = "merged"
    if status != "ok":
        policy = agent.on_missing
        if isinstance(policy, Substitute):
            use, value = "substituted", agent.default()
        else:
            use = "failed" if isinstance(policy, FailFast) else "dropped"
    return ChildOutcome(child.label, agent.name, type(child.task).__name__, status, use, share,
                        attempts, value, reason, cid, rejects)
