"""P5, the shared state machine: a versioned row per run, moved only by legal transitions,
by compare-and-swap on (row, version).

::

    renewal = StateMachine("renewal", states=[...], initial="init", terminal={"closed"},
                           transitions={"init": {"window_open"}, ...},
                           pauses={"human_required"}, emit_to="renewal.transitions")
    decide = renewal.transition_boundary("next_step", prompt, payload_type=Notes)

    row = await renewal.read(ctx, row_id)                 # journaled read
    c = await ctx.cross(decide, inputs, facts=renewal.facts(row))
    if c.committed:                                       # legal at row.version
        row = await renewal.apply(ctx, row_id, row.version, c.value.to_state,
                                  c.value.payload, crossing=c)
    if await renewal.sleep(ctx, row, timedelta(days=14)) == "lapsed": ...

- The LLM proposes one ``to_state`` and its payload; the ``state.legal_transition``
  verifier checks it against the state the row had at the version read (a deterministic
  lookup in the transition table). ``propose_transition`` does read, cross and apply.
- ``apply`` writes version n+1 only over version n and journals the move in the same write;
  a stale write raises ``StaleWriteError``, an illegal one ``IllegalTransitionError``.
  ``transition_with_retry`` re-reads and re-checks legality a bounded number of times.
- Rows live in versioned records ``state/<row_id>`` (by convention the row id is the run
  id); the value holds ``machine``, ``state``, ``payload`` (merged across moves),
  ``history_len``, the ``run_id`` that moved it last and the idempotency key of that move.
- ``emit_to`` publishes every move to a topic, an immutable audit log outside the journal.
- Timers armed with ``sleep`` carry the row's version as their guard: they lapse if the row
  moved on (a manual ``override`` included) before they are due.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from threshold.boundary import (
    Accept,
    Boundary,
    Prompt,
    Reject,
    RejectPolicy,
    TransportPolicy,
    Verdict,
    Verifier,
)
from threshold.clock import Clock, to_iso
from threshold.effects import EffectContext
from threshold.errors import (
    ConfigError,
    IllegalTransitionError,
    StaleWriteError,
    UnauthorizedError,
    UsageError,
)
from threshold.patterns._state._describe import describe_state
from threshold.patterns._state._proposal import (
    FACTS_KEY,
    LegalTransition,
    TransitionProposal,
    proposal_type,
)
from threshold.patterns._state._row import (
    MOVES,
    NAMESPACE,
    OVERRIDE,
    STALE,
    TRANSITION,
    StateRow,
)
from threshold.patterns._state._target import (
    Target,
    clock_of,
    decode,
    encode,
    has_role,
    payload_of,
    store_of,
)
from threshold.patterns._state._write import (
    Illegal,
    Move,
    Outcome,
    Site,
    Stale,
    dedupe_key,
    emit,
    history,
    published_keys,
    stale_note,
    write_once,
)
from threshold.runtime import Crossing, RunContext, Runtime
from threshold.store import EventRecord, Store

__all__ = [
    "MOVES",
    "NAMESPACE",
    "OVERRIDE",
    "STALE",
    "TRANSITION",
    "ProposedTransition",
    "StateMachine",
    "StateRow",
    "TransitionProposal",
    "describe_state",
]

MAX_OVERRIDE_ROUNDS = 32  # a person's override re-reads until it lands; rows rarely churn


@dataclass(frozen=True, slots=True)
class ProposedTransition:
    """What ``propose_transition`` did: the crossing, the row it was checked against, and
    the row after the move (None when the crossing did not commit)."""

    crossing: Crossing[Any]
    before: StateRow
    after: StateRow | None

    @property
    def applied(self) -> bool:
        return self.after is not None


class StateMachine:
    """Declared states and allowed transitions for one kind of row. Definitions only: it
    holds no store, so one module-level machine serves every runtime."""

    def __init__(self, name: str, states: Iterable[str],
                 transitions: Mapping[str, Iterable[str]], initial: str, *,
                 terminal: Iterable[str] = (), pauses: Iterable[str] = (),
                 namespace: str = NAMESPACE, emit_to: str | None = None, version: str = "1",
                 override_role: str = "admin") -> None:
        self.name, self.version, self.namespace = name, version, namespace
        self.states: tuple[str, ...] = tuple(dict.fromkeys(states))
        self.initial = initial
        self.terminal = frozenset(terminal)
        self.pauses = frozenset(pauses)
        self.transitions = {s: frozenset(transitions.get(s, ())) for s in self.states}
        self.emit_to = emit_to
        self.override_role = override_role
        self._validate(transitions)
        self._site = Site(name, namespace, self.check, self.allowed, emit_to)
        self._proposal_types: dict[Any, type[TransitionProposal[Any]]] = {}

    def _validate(self, transitions: Mapping[str, Iterable[str]]) -> None:
        declared = set(self.states)
        problems = [f"unknown state {s!r}" for s in
                    sorted(({self.initial} | self.terminal | self.pauses | set(transitions)
                            | {t for ts in transitions.values() for t in ts}) - declared)]
        problems += [f"terminal state {s!r} has transitions" for s in sorted(self.terminal)
                     if self.transitions.get(s)]
        if not self.states or "/" in self.namespace or not self.name:
            problems.append("a machine needs a name, states and a namespace without '/'")
        if problems:
            raise ConfigError(f"state machine {self.name!r}: " + "; ".join(problems))

    def __repr__(self) -> str:
        return f"StateMachine({self.name!r}, {len(self.states)} states)"

    # the table -----------------------------------------------------------------------------
    def allowed(self, state: str) -> frozenset[str]:
        return self.transitions.get(state, frozenset())

    def check(self, from_state: str, to_state: str) -> Verdict:
        """Deterministic legality of one move, as a verdict with a reason."""
        if to_state not in self.transitions:
            return Reject("state.unknown_state", f"{to_state!r} is not a state of {self.name}",
                          hint=f"choose one of: {', '.join(sorted(self.allowed(from_state)))}",
                          field="to_state")
        if to_state in self.allowed(from_state):
            return Accept()
        if from_state in self.terminal:
            return Reject("state.terminal", f"{from_state} is terminal", retryable=False,
                          field="to_state")
        return Reject("state.illegal_transition", f"{from_state} -> {to_state} is not allowed",
                      hint=f"from {from_state} choose one of: "
                           f"{', '.join(sorted(self.allowed(from_state)))}", field="to_state")

    def guard(self, row: StateRow) -> tuple[str, int]:
        """The timer guard for a row at its version: ``("state/<row_id>", version)``."""
        return (f"{self.namespace}/{row.row_id}", row.version)

    def facts(self, row: StateRow) -> dict[str, Any]:
        """Crossing facts that let the legality verifier see the row as read."""
        return {FACTS_KEY: {"machine": self.name, "row_id": row.row_id, "state": row.state,
                            "version": row.version}}

    # the boundary --------------------------------------------------------------------------
    def proposal_type(self, payload_type: Any = dict[str, Any]) -> type[TransitionProposal[Any]]:
        """``TransitionProposal[payload_type]`` with ``to_state`` one of the declared states."""
        if payload_type not in self._proposal_types:
            self._proposal_types[payload_type] = proposal_type(self.name, self.states,
                                                               payload_type)
        return self._proposal_types[payload_type]

    def legality_verifier(self) -> LegalTransition:
        return LegalTransition(self.name, self.version, self.check)

    def transition_boundary(
        self, name: str, prompt: Prompt, payload_type: Any = dict[str, Any], *,
        extra_verifiers: Sequence[Verifier[Any]] = (), on_reject: RejectPolicy | None = None,
        transport: TransportPolicy | None = None, version: str = "1",
    ) -> Boundary[TransitionProposal[Any]]:
        """A boundary whose proposal is one move. It commits nothing itself: ``apply`` is
        the commit, by CAS at the version the verifier checked. The prompt may use
        ``{state}`` and ``{allowed_states}``; ``propose_transition`` fills them in."""
        verifiers: list[Verifier[Any]] = [self.legality_verifier(), *extra_verifiers]
        return Boundary(name, output=self.proposal_type(payload_type), prompt=prompt,
                        verifiers=verifiers, on_reject=on_reject, transport=transport,
                        version=version)

    # reading -------------------------------------------------------------------------------
    async def load(self, store: Store, row_id: str) -> StateRow:
        """The row as stored now; an absent row is the initial state at version 0."""
        record = await store.get_record(self.namespace, row_id)
        if record is None:
            return StateRow(row_id, self.name, self.initial, 0)
        row = StateRow.from_record(record)
        if row.machine != self.name:
            raise UsageError(f"row {self.namespace}/{row_id} belongs to machine "
                             f"{row.machine!r}, not {self.name!r}")
        return row

    async def read(self, target: Target, row_id: str) -> StateRow:
        """Read a row. Inside a run the read is journaled, so a resumed run sees the version
        it decided on, not whatever the row holds by then."""
        if isinstance(target, RunContext):
            data = await target.step(f"state.read:{self.name}",
                                     self._read_json, target.runtime.store, row_id)
            return StateRow.from_json(data)
        return await self.load(store_of(target), row_id)

    async def _read_json(self, store: Store, row_id: str) -> dict[str, Any]:
        return (await self.load(store, row_id)).to_json()

    async def history(self, target: Target, row_id: str,
                      run_id: str | None = None) -> list[EventRecord]:
        return await history(self._site, store_of(target), row_id, run_id)

    # writing -------------------------------------------------------------------------------
    async def apply(self, target: Target, row_id: str, expected_version: int, to_state: str,
                    payload: Mapping[str, Any] | BaseModel | None = None, *,
                    actor: str | None = None, reason: str = "",
                    crossing: Crossing[Any] | None = None) -> StateRow:
        """Move the row from ``expected_version`` to ``to_state``, or raise
        ``StaleWriteError`` (it moved on) or ``IllegalTransitionError``."""
        return await self._transition(target, row_id, expected_version, to_state, payload,
                                      actor=actor, reason=reason, crossing=crossing, rounds=1)

    async def transition_with_retry(
        self, target: Target, row_id: str, to_state: str,
        payload: Mapping[str, Any] | BaseModel | None = None, *, actor: str | None = None,
        attempts: int = 3, expected_version: int | None = None, reason: str = "",
        crossing: Crossing[Any] | None = None,
    ) -> StateRow:
        """Like ``apply``, but a lost CAS re-reads the row and tries again (legality is
        checked again each time) up to ``attempts`` times. The first round uses
        ``expected_version`` when given, the row as read otherwise."""
        if attempts < 1:
            raise ConfigError(f"attempts must be at least 1, not {attempts}")
        return await self._transition(target, row_id, expected_version, to_state, payload,
                                      actor=actor, reason=reason, crossing=crossing,
                                      rounds=attempts)

    async def _transition(self, target: Target, row_id: str, expected: int | None,
                          to_state: str, payload: Mapping[str, Any] | BaseModel | None, *,
                          actor: str | None, reason: str, crossing: Crossing[Any] | None,
                          rounds: int) -> StateRow:
        data = payload_of(payload)
        cid = None if crossing is None else crossing.crossing_id or None
        phash = None if crossing is None else crossing.proposal_hash
        if not isinstance(target, RunContext):
            store, clock = store_of(target), clock_of(target)
            move = Move(to_state, data, actor or "system", reason=reason, crossing_id=cid,
                        proposal_hash=phash)
            outcome = await self._rounds(store, row_id, expected, move, rounds, clock)
            return self._result(row_id, to_state, outcome)
        ctx = target

        # Inside a run the CAS is an effect keyed by (run, step): its intent is journaled
        # first and its outcome after, so a resumed run gets the recorded outcome instead
        # of moving the row again. The key also rides on the row and the journal event, so
        # a crash between the CAS and the effect's record is recognised as "already done".
        # A plain ctx.step would re-run the CAS after such a crash and report the run's own
        # earlier write as a stale one.
        async def move_row(effect: EffectContext) -> dict[str, Any]:
            move = Move(to_state, data, actor or f"run:{ctx.run_id}", ctx.run_id, effect.key,
                        reason, cid, phash)
            outcome = await self._rounds(ctx.runtime.store, row_id, expected, move, rounds,
                                         ctx.runtime.clock)
            return encode(outcome)

        recorded = await ctx.effect(f"state:{self.name}:{to_state}", move_row)
        return self._result(row_id, to_state, decode(recorded))

    async def _rounds(self, store: Store, row_id: str, expected: int | None, move: Move,
                      rounds: int, clock: Clock) -> Outcome:
        outcome: Outcome = Stale(expected or 0, 0)
        for n in range(rounds):
            current = await self.load(store, row_id)
            outcome = await write_once(self._site, store, current,
                                       expected if n == 0 else None, move, clock)
            if not isinstance(outcome, Stale):
                return outcome
            await stale_note(store, self._site, row_id, move, outcome, to_iso(clock.now()))
        return outcome

    def _result(self, row_id: str, to_state: str, outcome: Outcome) -> StateRow:
        if isinstance(outcome, Stale):
            raise StaleWriteError(f"{self.namespace}/{row_id}", outcome.expected, outcome.actual)
        if isinstance(outcome, Illegal):
            raise IllegalTransitionError(self.name, row_id, outcome.from_state, to_state,
                                         outcome.allowed)
        return outcome

    async def create(self, target: Target, row_id: str,
                     payload: Mapping[str, Any] | BaseModel | None = None, *,
                     actor: str | None = None) -> StateRow:
        """Write the row at its initial state (version 1) unless it exists; return the row.
        Optional: an absent row already reads as the initial state at version 0."""
        async def write(store: Store, now: str, run_id: str | None) -> dict[str, Any]:
            row = StateRow(row_id, self.name, self.initial, 1, payload_of(payload), 0, run_id,
                           None, now)
            event = EventRecord(run_id, TRANSITION, {
                "machine": self.name, "row": row_id, "from": None, "to": self.initial,
                "from_version": 0, "version": 1, "actor": actor or run_id or "system",
                "payload": row.payload}, now)
            await store.cas_record(self.namespace, row_id, expected_version=0,
                                   value=row.value(), now=now, event=event)
            return (await self.load(store, row_id)).to_json()

        if isinstance(target, RunContext):
            ctx = target
            data = await ctx.effect(f"state:{self.name}:create", lambda e: write(
                ctx.runtime.store, to_iso(e.now), ctx.run_id))
            return StateRow.from_json(data)
        return StateRow.from_json(await write(store_of(target), to_iso(clock_of(target).now()),
                                              None))

    async def override(self, target: Runtime | Store, row_id: str, to_state: str,
                       principal: str, reason: str, *,
                       payload: Mapping[str, Any] | BaseModel | None = None,
                       authorize: Callable[[str, str], bool] | None = None) -> StateRow:
        """A person moves the row on, to any declared state, whatever the table allows
        from where it is. Needs ``override_role`` (or admin) and a reason; journaled as
        ``state.override`` with both. Timers guarded by the old version then lapse."""
        store, clock = store_of(target), clock_of(target)
        if not reason.strip():
            raise UsageError("an override needs a reason")
        if to_state not in self.transitions:
            raise IllegalTransitionError(self.name, row_id, "(override)", to_state,
                                         list(self.states))
        check = authorize or (target.authorize if isinstance(target, Runtime) else
                              has_role)
        current = await self.load(store, row_id)
        if not check(principal, self.override_role):
            await store.append_event(EventRecord(current.run_id, "state.override_refused", {
                "machine": self.name, "row": row_id, "to": to_state, "principal": principal,
                "reason": reason}, to_iso(clock.now())))
            raise UnauthorizedError(principal, f"override {self.name} rows",
                                    [self.override_role])
        move = Move(to_state, payload_of(payload), principal, reason=reason, override=True)
        outcome = await self._rounds(store, row_id, None, move, MAX_OVERRIDE_ROUNDS, clock)
        return self._result(row_id, to_state, outcome)

    # waiting -------------------------------------------------------------------------------
    async def sleep(self, ctx: RunContext, row: StateRow, delta: timedelta, *,
                    purpose: str = "state.wait") -> str:
        """Wait durably, guarded by the row's version: ``"fired"`` if the row is still at
        that version when the timer is due, ``"lapsed"`` if anything moved it first."""
        return await ctx.sleep(delta, purpose=purpose, guard=self.guard(row))

    async def sleep_until(self, ctx: RunContext, row: StateRow, when: datetime, *,
                          purpose: str = "state.wait") -> str:
        return await ctx.sleep_until(when, purpose=purpose, guard=self.guard(row))

    # read, cross, apply --------------------------------------------------------------------
    async def propose_transition(
        self, ctx: RunContext, boundary: Boundary[TransitionProposal[Any]], row_id: str,
        inputs: Mapping[str, Any], *, facts: Mapping[str, Any] | None = None,
        actor: str | None = None, retry_stale: int = 0,
    ) -> ProposedTransition:
        """Read the row (journaled), let the model propose a move through ``boundary``,
        and apply a committed proposal at the version it was verified against. With
        ``retry_stale`` > 0 a lost CAS re-reads and re-checks legality that many times;
        0 (the default) raises ``StaleWriteError``, so the caller re-decides instead."""
        row = await self.read(ctx, row_id)
        full = {**inputs, "state": row.state,
                "allowed_states": ", ".join(sorted(self.allowed(row.state)))}
        crossing = await ctx.cross(boundary, full, facts={**(facts or {}), **self.facts(row)})
        if not crossing.committed or crossing.value is None:
            return ProposedTransition(crossing, row, None)
        value = crossing.value
        after = await self._transition(ctx, row_id, row.version, value.to_state,
                                       payload_of(value.payload), actor=actor,
                                       reason=value.reason, crossing=crossing,
                                       rounds=1 + retry_stale)
        return ProposedTransition(crossing, row, after)

    # the audit topic -----------------------------------------------------------------------
    async def sync_topic(self, target: Runtime | Store) -> int:
        """Publish journaled moves missing from ``emit_to`` (a process that died between a
        CAS and its publish); return how many. The journal, written with each CAS, is the
        source of truth; the topic is its projection."""
        if self.emit_to is None:
            return 0
        store, clock = store_of(target), clock_of(target)
        have = await published_keys(store, self.emit_to)
        published = 0
        for kind in MOVES:
            for e in await store.list_events(None, kind):
                version = e.data.get("version")
                if e.data.get("machine") != self.name or version is None:
                    continue
                if dedupe_key(self._site, str(e.data["row"]), int(version)) not in have:
                    await emit(self._site, store, e.data, e.at, clock, check_existing=False)
                    published += 1
        return published
