"""``Runtime``: one explicit object holding the store, clock, models and agent definitions.

No globals: a test can hold two runtimes on two stores (or on one, as two workers).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from threshold.clock import Clock, SystemClock, to_iso
from threshold.effects import EffectContext
from threshold.errors import (
    ConfigError,
    NotFoundError,
    RunKilled,
    UnauthorizedError,
)
from threshold.ids import IdFactory
from threshold.models import ModelRegistry, normalize_spec
from threshold.runtime._approvals import decide, default_authorize
from threshold.runtime._tracer import NOOP_TRACER, Tracer
from threshold.store import (
    TERMINAL_RUN_STATUSES,
    ApprovalRecord,
    EventRecord,
    MessageRecord,
    RunRecord,
    Store,
)

AgentFn = Callable[..., Awaitable[Any]]


class Actor(Protocol):
    """Something outside the runs that acts at clock times: a simulated approver or
    customer. The worker asks it before advancing a virtual clock, so actors and timers
    interleave in time order."""

    async def next_due(self) -> datetime | None:
        """When this actor next wants to act (None: nothing pending)."""
        ...

    async def act(self, now: datetime) -> int:
        """Do everything due by ``now``; return how many things were done."""
        ...


class Shadow(Protocol):
    """Stands in for the outside world while a journal is replayed (``threshold.replay``):
    effects are recorded instead of performed, and ``ctx.step`` results (reads of the
    world) are served from the journal being replayed instead of read again."""

    async def effect(self, action: str, effect: EffectContext, payload: Any) -> Any:
        """What performing ``action`` returns (the recorded result), or raise its failure.
        ``payload`` is the committed proposal of a boundary, None for ``ctx.effect``."""
        ...

    def step_result(self, run_id: str, seq: int, name: str) -> tuple[bool, Any]:
        """``(True, result)`` when the replayed journal holds step ``name`` at ``seq``."""
        ...


F = TypeVar("F", bound=AgentFn)
CrashHook = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class AgentDef:
    """A registered agent: its code, by name and version, and the type of its input."""

    name: str
    version: str
    fn: AgentFn
    input_type: type[BaseModel] | None = None


class Runtime:
    """See the module docstring. ``clock`` is business time; ``lease_clock`` is the real
    time that worker leases are measured in (they are about processes, not the simulation)."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock | None = None,
        models: ModelRegistry | None = None,
        default_model: str = "sim",
        ids: IdFactory | None = None,
        lease_clock: Clock | None = None,
        lease_seconds: float = 30.0,
        concurrency: int = 64,
        crash_hook: CrashHook | None = None,
        authorize: Callable[[str, str], bool] = default_authorize,
        kill_principals: frozenset[str] | None = None,
        tracer: Tracer | None = None,
        shadow: Shadow | None = None,
    ) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.models = models or ModelRegistry()
        self.default_model = normalize_spec(default_model)
        self.ids = ids or IdFactory(0)
        self.lease_clock: Clock = lease_clock or SystemClock()
        self.lease_seconds = lease_seconds
        self.concurrency = concurrency
        self.authorize = authorize
        # Who may use the kill switch; None means any principal with the 'admin' role.
        self.kill_principals = kill_principals
        # Spans for runs, crossings, model calls and effects (threshold.observability).
        self.tracer: Tracer = tracer or NOOP_TRACER
        self._crash_hook = crash_hook
        # Replay only: effects go to this shadow ledger, never to the outside world.
        self.shadow = shadow
        self._agents: dict[tuple[str, str], AgentDef] = {}
        self._schemas: dict[type[BaseModel], dict[str, Any]] = {}
        self._killed: set[str] = set()
        self.actors: list[Actor] = []
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    # definitions -------------------------------------------------------------------------
    def agent(self, name: str, *, version: str = "1",
              input: type[BaseModel] | None = None) -> Callable[[F], F]:
        """Register ``async def fn(ctx, input)`` as agent ``name`` at ``version``."""

        def wrap(fn: F) -> F:
            self.register(AgentDef(name, version, fn, input))
            return fn

        return wrap

    def register(self, definition: AgentDef) -> None:
        self._agents[(definition.name, definition.version)] = definition

    def definition(self, name: str, version: str) -> AgentDef | None:
        return self._agents.get((name, version))

    def definitions(self) -> list[AgentDef]:
        """Every registered agent definition, by name and version."""
        return [self._agents[key] for key in sorted(self._agents)]

    def latest_version(self, name: str) -> str | None:
        versions = [v for (n, v) in self._agents if n == name]
        return max(versions, key=_version_key) if versions else None

    def schema_for(self, output: type[BaseModel]) -> dict[str, Any]:
        schema = self._schemas.get(output)
        if schema is None:
            schema = self._schemas[output] = output.model_json_schema()
        return schema

    # runs --------------------------------------------------------------------------------
    async def start(
        self,
        agent: str,
        input: BaseModel | dict[str, Any],
        *,
        run_id: str | None = None,
        seed: int = 0,
        model: str | None = None,
        version: str | None = None,
        pins: dict[str, Any] | None = None,
    ) -> str:
        """Create a run unless ``run_id`` exists already (idempotent start); return its id.

        The run pins its agent version and model: a later deployment does not change an
        in-flight run unless it is migrated on purpose."""
        version = version or self.latest_version(agent)
        if version is None or self.definition(agent, version) is None:
            raise ConfigError(f"no agent {agent!r} is registered (version {version})")
        model_spec = normalize_spec(model or self.default_model)
        self.models.get(model_spec)  # refuse a model we cannot name before journaling it
        run_id = run_id or self.ids.new("run")
        now = to_iso(self.clock.now())
        data = input.model_dump(mode="json") if isinstance(input, BaseModel) else dict(input)
        all_pins = {"agent_version": version, "model": model_spec, **(pins or {})}
        await self.store.create_run(RunRecord(run_id, agent, version, "ready", data, seed, now,
                                              now, all_pins))
        return run_id

    async def run_until_idle(self) -> int:
        """Work until no run can make progress; on a ``VirtualClock`` time jumps to each
        next timer. Returns the number of runs executed to completion or suspension."""
        from threshold.runtime._worker import Worker

        return await Worker(self).run_until_idle()

    async def serve(self, *, poll_seconds: float = 0.5,
                    stop: Callable[[], bool] | None = None) -> None:
        """Work forever (or until ``stop()``), polling for new work."""
        from threshold.runtime._worker import Worker

        await Worker(self).serve(poll_seconds=poll_seconds, stop=stop)

    async def deliver(self, run_id: str, channel: str, message_id: str, payload: Any) -> bool:
        """Put a message in a run's inbox, at most once per ``message_id``; wakes the run."""
        if await self.store.get_run(run_id) is None:
            raise NotFoundError(f"no run {run_id!r}")
        now = to_iso(self.clock.now())
        return await self.store.deliver(MessageRecord(run_id, message_id, channel, payload, now),
                                        now=now)

    async def decide(self, approval_id: str, *, approve: bool, principal: str,
                     comment: str = "") -> ApprovalRecord:
        return await decide(self, approval_id, approve=approve, principal=principal,
                            comment=comment)

    # the kill switch ---------------------------------------------------------------------
    def may_kill(self, principal: str) -> bool:
        if self.kill_principals is None:
            return self.authorize(principal, "admin")
        # A bare name in the list admits that person whatever role they act in.
        return principal in self.kill_principals or principal.partition("@")[0] in \
            self.kill_principals or any(f"role:{r}" in self.kill_principals
                                        for r in _roles(principal))

    async def kill(self, *, principal: str, reason: str, run_id: str | None = None) -> int:
        """Stop one run (or all, with ``run_id=None``). Refused for unauthorized principals;
        every use, refused or not, is journaled. Returns how many runs were stopped."""
        now = to_iso(self.clock.now())
        allowed = self.may_kill(principal)
        await self.store.append_event(EventRecord(run_id, "kill_switch", {
            "principal": principal, "reason": reason, "scope": run_id or "*",
            "allowed": allowed}, now))
        if not allowed:
            raise UnauthorizedError(principal, "use the kill switch",
                                    sorted(self.kill_principals or {"role:admin"}))
        await self.store.set_meta(f"kill:{run_id or '*'}", f"{principal}\x1f{reason}")
        targets = ([await self.store.get_run(run_id)] if run_id else
                   await self.store.list_runs())
        stopped = 0
        for run in targets:
            if run is None or run.status in TERMINAL_RUN_STATUSES:
                continue
            self._killed.add(run.run_id)
            if run.status != "running":
                await self.store.finish_run(run.run_id, status="killed", now=now,
                                            error=f"killed by {principal}: {reason}")
            stopped += 1
        return stopped

    def check_killed(self, run_id: str) -> None:
        if self.is_killed(run_id):
            raise RunKilled(run_id, "kill switch", "stopped by the kill switch")

    def is_killed(self, run_id: str) -> bool:
        return run_id in self._killed or "*" in self._killed

    async def refresh_kills(self) -> None:
        """Pick up kill switches thrown by other processes."""
        if await self.store.get_meta("kill:*") is not None:
            self._killed.add("*")

    async def refresh_run_kills(self, run_ids: Iterable[str]) -> None:
        """Pick up kill switches other processes threw at these runs (the ones executing
        here), so a run stops mid-crossing without waiting for its next one."""
        await self.refresh_kills()
        for run_id in run_ids:
            if run_id not in self._killed and await self.store.get_meta(f"kill:{run_id}") \
                    is not None:
                self._killed.add(run_id)

    # crash injection ---------------------------------------------------------------------
    def crash_point(self, window: str) -> None:
        """Named crash windows for crash-equivalence tests; free when no hook is set."""
        if self._crash_hook is not None:
            self._crash_hook(window)


def _roles(principal: str) -> set[str]:
    from threshold.runtime._approvals import principal_roles

    return principal_roles(principal)


def _version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                 for p in version.removeprefix("v").split("."))

