"""Verify-only deterministic replay: the run's code against its journal, in memory.

``FastContext`` is a ``RunContext`` whose operations are answered from the loaded journal
instead of a store: a crossing re-parses each recorded attempt's raw output with the
boundary's schema, runs the verifiers again and derives the outcome the crossing engine
would reach; steps, events, effects, timers and inbox reads return what the journal holds
once the code asks for the same thing at the same position. Effects are not performed.

It compares what the full engine's diff compares (``threshold.replay._diff``, strict mode),
and stops at the first difference or at anything it cannot decide alone (a human decision,
``ctx.runtime``, a guarded timer, ...). A run it stopped is replayed by the full engine, so
the fast path only ever decides "clean"; every reported divergence comes from the engine.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar, cast

from pydantic import BaseModel

from threshold.boundary import (
    SCHEMA_VERIFIER,
    Abort,
    Accept,
    Boundary,
    Escalate,
    Reject,
    Retry,
    Verifier,
    VerifyContext,
    finish_verifier,
    parse_output,
    start_verifier,
)
from threshold.clock import from_iso, to_iso
from threshold.effects import EffectContext
from threshold.errors import ConfigError, EffectFailed, RunKilled, Suspend
from threshold.ids import digest, idempotency_key
from threshold.replay._lean import LeanAttempt, LeanCrossing, LeanJournal
from threshold.replay._shadow import ShadowEffect, replayed_failure
from threshold.runtime import Crossing, Runtime
from threshold.runtime._context import Position, RunContext
from threshold.store import TERMINAL_RUN_STATUSES, RunRecord, StepRecord

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")


class _Stop(BaseException):
    """Unwinds the agent code once the fast path has decided; a BaseException so that an
    agent's ``except Exception`` cannot swallow it."""


@dataclass(frozen=True, slots=True)
class Fallback:
    """Why a run went to the full engine; ``step`` is set when the fast path saw the code
    depart from the journal there (the engine then names the first diverging step)."""

    reason: str
    step: int | None = None


@dataclass(slots=True)
class FastResult:
    """A run the fast path replayed clean: the replayed run record and the shadow ledger."""

    replayed: RunRecord
    shadow: list[ShadowEffect]
    compared_steps: int
    crossings: list[str]  # boundary names of the compared crossings, in journal order


class _NoRuntime:
    """``ctx.runtime`` of a fast replay: any use hands the run to the full engine."""

    def __init__(self, ctx: FastContext) -> None:
        self._ctx = ctx

    def __getattr__(self, name: str) -> NoReturn:
        self._ctx.unsupported(f"the code uses ctx.runtime.{name}")


class FastContext(RunContext):
    """A run's context answered from its journal (see the module docstring). Time is the
    journal's logical time, as when the runtime resumes a run: the end of the last
    journaled operation. Nothing is on record for the code until it has been verified."""

    def __init__(self, journal: LeanJournal, run: RunRecord, definitions: _Definitions) -> None:
        super().__init__(cast(Runtime, _NoRuntime(self)), run, {})
        self.journal = journal
        self.rid = run.run_id
        self._defs = definitions
        self._at = journal.run.created_at  # logical time: when the last journaled op ended
        self._in_flight = journal.run.status not in TERMINAL_RUN_STATUSES
        self._last = journal.last_seq if self._in_flight else 0  # only asked when in flight
        self._keys: set[str] = set()
        self._taken: dict[int, StepRecord | None] = {}  # positions taken ahead, not yet used
        self.visited = 0
        self.shadow: list[ShadowEffect] = []
        self.fallback: Fallback | None = None
        self.ended = False  # an in-flight run reached the end of its journal

    # decisions ---------------------------------------------------------------------------
    def unsupported(self, reason: str) -> NoReturn:
        if self.fallback is None:
            self.fallback = Fallback(reason)
        raise _Stop

    def diverge(self, seq: int, replayed: str, recorded: str) -> NoReturn:
        if self.fallback is None:
            self.fallback = Fallback(f"step {seq}: the code does {replayed}, the journal "
                                     f"recorded {recorded}", seq)
        raise _Stop

    # positions and time ------------------------------------------------------------------
    def now(self) -> datetime:
        return from_iso(self._at)

    def _next(self, kind: str, name: str, *, ahead: bool = False
              ) -> tuple[int, StepRecord | None]:
        self._seq += 1
        seq = self._seq
        recorded = self.journal.steps.get(seq)
        if recorded is None:
            if seq in self.journal.crossings:
                self.unsupported(f"the crossing at step {seq} has not finished")
            if self._in_flight and seq > self._last:
                if ahead:  # a position taken ahead: it ends the replay once it is used
                    return seq, None
                self.ended = True  # nothing past an in-flight journal is compared
                raise _Stop
            if kind == "stage" and self._in_flight:
                return seq, None  # an unfinished stage: its operations are in the journal
            self.diverge(seq, f"{kind}:{name}", "nothing")
        if recorded.kind != kind or recorded.name != name:
            self.diverge(seq, f"{kind}:{name}", f"{recorded.kind}:{recorded.name}")
        self.visited += 1
        if kind != "cross":  # a crossing is on record for the code once it is verified
            self._steps[seq] = recorded
        self._at = recorded.at
        return seq, recorded

    def _same(self, seq: int, what: str, replayed: Any, recorded: Any) -> None:
        # The full engine compares results after a JSON round trip through its store.
        if replayed == recorded or _json(replayed) == recorded:
            return
        self.diverge(seq, f"{what} -> {_short(replayed)}", f"{what} -> {_short(recorded)}")

    # plain journaled steps ---------------------------------------------------------------
    async def step(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        _, recorded = self._next("step", name)
        assert recorded is not None
        return recorded.result  # the full engine serves reads from the journal too

    async def event(self, kind: str, **data: Any) -> None:
        seq, recorded = self._next("event", kind)
        assert recorded is not None
        self._same(seq, f"event:{kind}", data, recorded.result)

    async def stage(self, name: str, fn: Callable[[], Awaitable[R]]) -> R:
        seq, recorded = self._next("stage", name)
        value = await fn()
        if recorded is None:
            self.diverge(seq, f"stage:{name} finished", "the stage unfinished")
        self._same(seq, f"stage:{name}", {"end": self._seq, "value": value}, recorded.result)
        return value

    async def effect(self, action: str, fn: Callable[[EffectContext], Awaitable[Any]], *,
                     key: str | None = None) -> Any:
        seq, recorded = self._next("effect", action)
        assert recorded is not None
        derived = idempotency_key(self.run_id, seq, action)
        key = key or derived
        result, error = self._shadow_effect(key, seq, action, None, explicit=key != derived)
        replayed = {"key": key, "result": result} if error is None else \
            {"key": key, "error": error}
        self._same(seq, f"effect:{action}", replayed, recorded.result)
        if error is not None:
            raise EffectFailed(action, key, error)
        return result

    def _shadow_effect(self, key: str, seq: int, action: str, payload_hash: str | None, *,
                       explicit: bool) -> tuple[Any, str | None]:
        """What the shadow ledger answers for ``key``: (result, None) or (None, failure)."""
        if key in self._keys:
            self.unsupported(f"effect key {key} is used twice")
        self._keys.add(key)
        effect = self.journal.effects.get(key)
        if effect is None and explicit:
            self.unsupported(f"effect key {key} is not in this run's journal")
        done = effect is not None and effect[0] in ("done", "failed")
        self.shadow.append(ShadowEffect(key, self.rid, seq, action, payload_hash, done))
        if effect is None or not done:
            return None, None
        if effect[0] == "failed":
            failure = replayed_failure(effect[2] or "")
            return None, f"{type(failure).__name__}: {failure}"
        return effect[1], None

    # waiting -----------------------------------------------------------------------------
    async def sleep_until(self, when: datetime, *, purpose: str = "sleep",
                          guard: tuple[str, int] | None = None) -> str:
        seq, recorded = self._next("timer", purpose)
        assert recorded is not None
        if guard is not None:
            self.unsupported("a guarded timer (its lapse depends on the store's records)")
        timer = self.journal.timers.get(f"{self.run_id}/{seq}")
        if timer is None or timer[1] is not None or recorded.result != "fired":
            self.unsupported(f"the timer at step {seq} is not in the journal as fired")
        if timer[0] != to_iso(when):
            self.unsupported(f"the timer at step {seq} fires at {to_iso(when)}, the journal's "
                             f"at {timer[0]}")
        return "fired"

    async def receive(self, channel: str, *, timeout: timedelta | None = None) -> Any:
        called = self._at
        seq, recorded = self._next("receive", channel)
        assert recorded is not None
        timer = self.journal.timers.get(f"{self.run_id}/{seq}/timeout")
        if timer is not None and (timeout is None or
                                  timer[0] != to_iso(from_iso(called) + timeout)):
            self.unsupported(f"the receive timeout at step {seq} differs from the journal's")
        if recorded.result is None:
            if timer is None:
                self.unsupported(f"the receive at step {seq} timed out with no timer recorded")
            return None
        message = self.journal.messages.get(str(recorded.result.get("message_id")))
        if message is None or message[0] != channel or message[2] != seq:
            self.unsupported(f"the message received at step {seq} is not in the journal")
        if timeout is not None and timer is None and message[1] > called:
            # It came after the call: the original waited on a timeout timer we cannot see.
            self.unsupported(f"the receive at step {seq} waited with no timer recorded")
        return recorded.result["payload"]

    async def deliver(self, run_id: str, channel: str, message_id: str, payload: Any) -> bool:
        self.unsupported("the code delivers to another run")

    # boundaries --------------------------------------------------------------------------
    async def cross(self, boundary: Boundary[M], inputs: Mapping[str, Any], *,
                    model: str | None = None,
                    facts: Mapping[str, Any] | None = None) -> Crossing[M]:
        seq, recorded = self._next("cross", boundary.name)
        assert recorded is not None
        return await self._cross(seq, recorded, boundary, inputs, facts)

    def take_position(self, kind: str, name: str) -> Position:
        # As on the full engine's fresh store, nothing is on record for the code yet: the
        # pattern runs every crossing, and each is verified when it does.
        seq, recorded = self._next(kind, name, ahead=True)
        self._taken[seq] = recorded
        return Position(seq, kind, name, None)

    async def cross_at(self, position: Position, boundary: Boundary[M],
                       inputs: Mapping[str, Any], *, model: str | None = None,
                       facts: Mapping[str, Any] | None = None) -> Crossing[M]:
        if (position.kind, position.name) != ("cross", boundary.name) or \
                position.seq not in self._taken:
            raise ConfigError(f"position {position.seq} was not taken here for "
                              f"cross:{boundary.name}")
        recorded = self._taken.pop(position.seq)
        if recorded is None:
            self.ended = True
            raise _Stop
        return await self._cross(position.seq, recorded, boundary, inputs, facts)

    def _cross(self, seq: int, recorded: StepRecord, boundary: Boundary[M],
               inputs: Mapping[str, Any], facts: Mapping[str, Any] | None
               ) -> Coroutine[Any, Any, Crossing[M]]:
        # Not a coroutine itself: the caller awaits the crossing's own, one frame fewer.
        rows = self.journal.crossings.get(seq)
        if rows is None:
            self.unsupported(f"the crossing at step {seq} has no rows")
        self.visited += 1  # the crossing rows, compared as one position with the step
        crossing = _Crossing(self, seq, self._defs.plan(boundary), dict(inputs),
                             dict(facts) if facts else {}, rows)
        return cast(Coroutine[Any, Any, Crossing[M]], crossing.run(recorded))


class _Crossing:
    """One crossing derived again from its recorded attempts, as ``CrossingEngine`` would."""

    __slots__ = ("attempt_no", "b", "ctx", "dumped", "facts", "inputs", "last_rejects", "plan",
                 "rec", "seq", "verdicts_seen")

    def __init__(self, ctx: FastContext, seq: int, plan: _Plan, inputs: dict[str, Any],
                 facts: dict[str, Any], rec: LeanCrossing) -> None:
        self.ctx, self.seq, self.plan, self.b, self.inputs, self.facts, self.rec = (
            ctx, seq, plan, plan.boundary, inputs, facts, rec)
        self.last_rejects: list[Reject] = []
        self.attempt_no = 0
        self.verdicts_seen = 0  # the recorded verdict rows compared so far, in written order
        self.dumped: Any = None  # the last parsed proposal, as the journal stores it

    def diverge(self, what: str, replayed: Any, recorded: Any) -> NoReturn:
        where = f"cross:{self.b.name} {what}"
        self.ctx.diverge(self.seq, f"{where} {replayed}", f"{where} {recorded}")

    def _check_definition(self) -> None:
        b, rec, plan = self.b, self.rec, self.plan
        if rec.verifiers == plan.text and (rec.boundary_version, rec.action) == plan.definition:
            return  # as the store writes them: the comparisons below would find them equal
        if rec.boundary_version != b.version or rec.action != b.action:
            self.diverge("definition", f"v{b.version} action {b.action}",
                         f"v{rec.boundary_version} action {rec.action}")
        expected = plan.expected
        if rec.verifiers != plan.text and rec.verifiers != expected and (
                not isinstance(rec.verifiers, str) or json.loads(rec.verifiers) != expected):
            self.diverge("verifiers", expected, rec.verifiers)

    async def run(self, recorded: StepRecord) -> Crossing[Any]:
        self._check_definition()
        input_digest: str | None = None
        failures = 0
        attempts = self.rec.attempts
        attempt_no = 0
        while True:
            attempt_no = self.attempt_no = attempt_no + 1
            if attempt_no > len(attempts):
                self.diverge("attempts", f">= {attempt_no}", len(attempts))
            a = attempts[attempt_no - 1]
            if a.attempt != attempt_no:
                self.ctx.unsupported(f"crossing {self.seq} has a gap in its attempts")
            if a.kind == "transport_error":
                failures += 1
                done = self._transport(a, failures)
                if done is None:
                    continue
                outcome = done
                break
            if input_digest is None:
                input_digest = digest(self.inputs)[:16]
            if a.input_digest != input_digest:
                self.diverge("inputs", input_digest, a.input_digest)
            proposed = await self._attempt(a, attempt_no)
            if proposed is not None:
                outcome = proposed
                break
        if attempt_no != len(attempts):
            self.diverge("attempts", attempt_no, len(attempts))
        if self.verdicts_seen != len(self.rec.verdicts):
            self.diverge("verdicts", f"{self.verdicts_seen} rows",
                         f"{len(self.rec.verdicts)} rows")
        theirs = recorded.result
        # The crossing id only repeats the position; the diff leaves it out too.
        mine = as_json(outcome, self.dumped,
                       theirs.get("crossing_id") if isinstance(theirs, dict) else None)
        if mine != theirs and _json(mine) != theirs:
            self.ctx.diverge(self.seq, f"cross:{self.b.name} {_short(mine)}",
                             f"cross:{self.b.name} {_short(theirs)}")
        self.ctx._steps[self.seq] = recorded  # on record for the code once verified
        return outcome

    def _transport(self, a: LeanAttempt, failures: int) -> Crossing[Any] | None:
        recorded = self.rec.verdicts
        if self.verdicts_seen < len(recorded) and recorded[self.verdicts_seen][0] == a.attempt:
            self.diverge(f"attempt {a.attempt}", "transport error", "verdicts")
        policy = self.b.transport
        kind = a.error_kind or "transport"
        if kind != a.error_kind:
            self.diverge(f"attempt {a.attempt}", kind, a.error_kind)
        retryable = a.retry_at is not None
        if retryable and failures <= policy.max_retries:
            assert a.retry_at is not None
            at = from_iso(a.at)
            gap = (from_iso(a.retry_at) - at).total_seconds()
            if to_iso(at + policy.delay(failures, gap)) != a.retry_at:
                self.ctx.unsupported(f"the backoff of crossing {self.seq} differs")
            return None
        if isinstance(policy.exhausted, Escalate):
            self.ctx.unsupported("an escalation to a human")
        reason = f"transport: {kind}: {a.error_message or ''}"
        return self._finish("failed", reason=reason, rejects=self.last_rejects)

    async def _attempt(self, a: LeanAttempt, attempt_no: int) -> Crossing[Any] | None:
        b = self.b
        text = a.raw or ""
        value: BaseModel | None = None
        if a.refusal:
            schema: Accept | Reject = Reject(
                "model.refusal", "the model refused to answer",
                hint="answer with the JSON object the schema describes")
        else:
            value, schema = parse_output(text, b.output)
        cid = self.rec.crossing_id
        rejects = [schema] if isinstance(schema, Reject) else []
        mine = [(attempt_no, SCHEMA_VERIFIER, "reject", schema.code, cid)
                if isinstance(schema, Reject) else
                (attempt_no, SCHEMA_VERIFIER, "accept", None, cid)]
        if value is None:
            phash = digest(text)
        else:
            self.dumped = value.model_dump(mode="json")
            phash = digest(self.dumped)
            vctx = VerifyContext(self.ctx.rid, self.seq, b.name, self.inputs, from_iso(a.at),
                                 attempt_no, self.facts)
            for check, name in self.plan.checks:
                verdict = start_verifier(check, value, vctx)
                if not isinstance(verdict, (Accept, Reject)):
                    verdict = await finish_verifier(check, verdict)
                if isinstance(verdict, Reject):
                    rejects.append(verdict)
                    mine.append((attempt_no, name, "reject", verdict.code, cid))
                else:
                    mine.append((attempt_no, name, "accept", None, cid))
        if phash != a.proposal_hash:
            self.diverge(f"attempt {attempt_no} proposal", phash[:10],
                         (a.proposal_hash or "")[:10])
        # Read in the order they were written, which is the order they were run in. A row
        # count that differs misaligns what follows: it diverges here or at the end.
        seen = self.verdicts_seen
        self.verdicts_seen = seen + len(mine)
        theirs = self.rec.verdicts[seen:self.verdicts_seen]
        if mine != theirs and sorted(mine) != sorted(theirs):
            self.diverge(f"attempt {attempt_no} verdicts", sorted(v[1:4] for v in mine),
                         sorted(v[1:4] for v in theirs))
        self.last_rejects = rejects
        if not rejects:
            assert value is not None
            return self._commit(value, phash)
        action = b.on_reject.decide(rejects, attempt_no)
        if isinstance(action, Retry):
            return None
        if isinstance(action, Escalate):
            self.ctx.unsupported("an escalation to a human")
        assert isinstance(action, Abort)
        summary = "; ".join(f"{r.code}: {r.message}" for r in rejects)
        return self._finish("aborted", reason=action.reason or summary, rejects=rejects)

    def _commit(self, value: BaseModel, phash: str) -> Crossing[Any]:
        b = self.b
        effect_result = None
        if b.commit is not None:
            key = idempotency_key(self.ctx.rid, self.seq, b.action)
            effect_result, error = self.ctx._shadow_effect(key, self.seq, b.action, phash,
                                                           explicit=False)
            if error is not None:
                return self._finish("failed", reason=f"effect failed: {error}", rejects=[])
        return Crossing(b.name, "committed", self.attempt_no, value, effect_result, (),
                        "", None, f"{self.ctx.rid}/{self.seq}", phash)

    def _finish(self, outcome: Any, *, reason: str, rejects: list[Reject]) -> Crossing[Any]:
        return Crossing(self.b.name, outcome, self.attempt_no, None, None,
                        tuple(rejects), reason, None, f"{self.ctx.rid}/{self.seq}", None)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What every crossing of one boundary compares alike, worked out once per replay."""

    boundary: Boundary[Any]
    definition: tuple[str, str]  # (version, action)
    expected: list[list[str]]  # the verifier list a crossing records ...
    text: str  # ... and its compact JSON text, as the store writes it
    checks: tuple[tuple[Verifier[Any], str], ...]  # each verifier with its name


class _Definitions:
    """Agent definitions and per-boundary plans, shared by every run of a replay."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # Keyed by id; a plan holds its boundary, so that the id cannot be reused meanwhile.
        self._plans: dict[int, _Plan] = {}

    def plan(self, b: Boundary[Any]) -> _Plan:
        known = self._plans.get(id(b))
        if known is None or known.boundary is not b:
            expected = [list(v) for v in b.verifier_ids]
            known = self._plans[id(b)] = _Plan(
                b, (b.version, b.action), expected, json.dumps(expected, separators=(",", ":")),
                tuple((check, check.name) for check in b.verifiers))
        return known


async def verify_run(journal: LeanJournal, run: RunRecord, definitions: _Definitions
                     ) -> FastResult | Fallback:
    """Replay one run verify-only; ``run`` is the record the full engine would execute."""
    if journal.blocked is not None:
        return Fallback(journal.blocked)
    unfinished = journal.crossings.keys() - journal.steps.keys()
    if unfinished:
        return Fallback(f"the crossing at step {min(unfinished)} has not finished")
    definition = definitions.runtime.definition(run.agent, run.agent_version)
    assert definition is not None  # checked for the whole batch before
    ctx = FastContext(journal, run, definitions)
    status, result, error = "completed", None, None
    try:
        argument: Any = run.input
        if definition.input_type is not None:
            argument = definition.input_type.model_validate(run.input)
        result = await definition.fn(ctx, argument)
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
    except _Stop:
        pass
    except (Suspend, RunKilled) as exc:
        if ctx.fallback is None and not ctx.ended:
            ctx.fallback = Fallback(f"the code raised {type(exc).__name__}")
    except Exception as exc:  # the run fails, recorded as the worker records it
        status, error = "failed", "".join(traceback.format_exception_only(exc)).strip()
    except BaseExceptionGroup:  # a task group unwound by our stop
        if ctx.fallback is None and not ctx.ended:
            raise
    return _decide(ctx, journal, status, result, error)


def _decide(ctx: FastContext, journal: LeanJournal, status: str, result: Any,
            error: str | None) -> FastResult | Fallback:
    if ctx.fallback is not None:
        return ctx.fallback
    if ctx.visited != len(journal.steps) + len(journal.crossings):
        return Fallback("the code did not reach every journaled step")
    run = journal.run
    if ctx.ended:  # only in-flight runs end early; nothing past their journal is compared
        replayed = replace(run, status="waiting", result=None, error=None)
    else:
        ours = (run.status, run.result, run.error)
        same = (status, result, error) == ours or (status, _json(result), error) == ours
        if run.status in TERMINAL_RUN_STATUSES and not same:
            return Fallback(f"the run ends {status} -> {_short(result or error)}, the "
                            f"journal's {run.status} -> {_short(run.result or run.error)}",
                            journal.last_seq + 1)
        # Equal results: the journal's record stands for the replayed one.
        replayed = run if same else replace(run, status=status, result=result, error=error)
    names = [s.name for _, s in sorted(journal.steps.items()) if s.kind == "cross"]
    # Every crossing is a step here: verify_run hands on a run with an unfinished one.
    return FastResult(replayed, ctx.shadow, len(journal.steps), names)


def as_json(result: Crossing[Any], dumped: Any, crossing_id: str | None) -> dict[str, Any]:
    """``result.to_json()`` with the value as already dumped for its hash, and another
    crossing id (a test holds the two equal)."""
    return {"boundary": result.boundary, "outcome": result.outcome,
            "attempts": result.attempts,
            "value": dumped if result.value is not None else None,
            "effect_result": result.effect_result,
            "rejects": [[r.code, r.message, r.retryable, r.hint, r.field]
                        for r in result.rejects],
            "reason": result.reason, "decided_by": result.decided_by,
            "crossing_id": crossing_id, "proposal_hash": result.proposal_hash}


def _json(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, separators=(",", ":"), default=str))
    except (TypeError, ValueError):
        return value


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def definitions_for(runtime: Runtime) -> _Definitions:
    return _Definitions(runtime)
