"""The outside world during a replay: a shadow ledger for effects, and an actor that puts
back, at their recorded times, the inputs that came from outside the runs (run starts,
inbox messages, human decisions, kill switches)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from threshold.clock import from_iso, to_iso
from threshold.effects import EffectContext
from threshold.errors import UsageError
from threshold.ids import digest
from threshold.replay._journal import RunJournal
from threshold.runtime import SLA_ACTOR, Runtime, decide
from threshold.store import EffectRecord, RunRecord, StepRecord

APPROVAL_CHANNEL = "approval"  # decisions re-create their own wake-up messages


@dataclass(frozen=True, slots=True)
class ShadowEffect:
    """An effect a replay would have performed: recorded here, performed nowhere."""

    key: str
    run_id: str
    step: int
    action: str
    payload_hash: str | None
    recorded: bool  # the journal had a result (or failure) for this key


class ShadowLedger:
    """``Runtime(shadow=...)``: effects return their recorded result (or raise their recorded
    failure) and are listed in ``effects``; ``ctx.step`` reads return their recorded result."""

    def __init__(self, journals: Iterable[RunJournal] = ()) -> None:
        self._effects: dict[str, EffectRecord] = {}
        self._steps: dict[tuple[str, int], StepRecord] = {}
        self.effects: list[ShadowEffect] = []
        for journal in journals:
            self.add(journal)

    def add(self, journal: RunJournal) -> None:
        for effect in journal.effects:
            self._effects[effect.key] = effect
        for seq, step in journal.steps.items():
            if step.kind == "step":
                self._steps[(journal.run_id, seq)] = step

    async def effect(self, action: str, effect: EffectContext, payload: Any) -> Any:
        recorded = self._effects.get(effect.key)
        done = recorded is not None and recorded.status in ("done", "failed")
        self.effects.append(ShadowEffect(effect.key, effect.run_id, effect.step, action,
                                         None if payload is None else digest(payload), done))
        if recorded is None or not done:
            return None
        if recorded.status == "failed":
            raise replayed_failure(recorded.error or "")
        return recorded.result

    def step_result(self, run_id: str, seq: int, name: str) -> tuple[bool, Any]:
        step = self._steps.get((run_id, seq))
        if step is None or step.name != name:
            return False, None
        return True, step.result

    def for_run(self, run_id: str) -> list[ShadowEffect]:
        return [e for e in self.effects if e.run_id == run_id]


def replayed_failure(message: str) -> Exception:
    """An exception whose ``f"{type}: {text}"`` is the recorded message, so the replayed
    crossing or effect records exactly the failure the original recorded."""
    name, sep, text = message.partition(": ")
    if not sep or not name.isidentifier():
        name, text = "EffectError", message
    failure: type[Exception] = type(name, (Exception,), {})
    return failure(text)


# --- the actor ---------------------------------------------------------------------------


@dataclass(order=True, slots=True)
class _Input:
    at: str
    order: int
    kind: str = field(compare=False)
    data: Any = field(compare=False)


@dataclass(frozen=True, slots=True)
class Unapplied:
    """A recorded outside input the replay could not put back (its approval never came)."""

    run_id: str
    kind: str
    detail: str


class JournalActor:
    """Puts the runs' outside inputs back at their recorded times (``Runtime.actors``).

    A human decision waits, past its recorded time, until the replay has escalated the
    crossing it decides: the replay may get there later than the original did. SLA
    fallbacks are not re-applied: the replayed approval's own SLA timer does that."""

    def __init__(self, runtime: Runtime, runs: Iterable[tuple[RunRecord, RunJournal]]) -> None:
        self.runtime = runtime
        self._queue: list[_Input] = []
        self._decisions: dict[str, _Input] = {}  # approval id -> decision, once due
        self._refused: list[Unapplied] = []
        order = 0
        for record, journal in runs:
            order += 1
            self._push(_Input(record.created_at, order, "start", record))
            for message in journal.messages:
                if message.channel != APPROVAL_CHANNEL:
                    order += 1
                    self._push(_Input(message.received_at, order, "deliver", message))
            for approval in journal.approvals:
                if approval.status in ("approved", "denied") and approval.decided_by and \
                        approval.decided_by != SLA_ACTOR and approval.decided_at:
                    order += 1
                    self._push(_Input(approval.decided_at, order, "decide", approval))
            for event in journal.events:
                if event.kind == "kill_switch" and event.data.get("allowed"):
                    order += 1
                    self._push(_Input(event.at, order, "kill", event.data))

    def _push(self, item: _Input) -> None:
        heapq.heappush(self._queue, item)

    @property
    def unapplied(self) -> list[Unapplied]:
        """Decisions whose approval the replay never reached, or could not take."""
        waiting = [Unapplied(item.data.run_id, "decision",
                             f"{item.data.approval_id}: {item.data.status} by "
                             f"{item.data.decided_by}, never reached")
                   for item in [*self._decisions.values(),
                                *(i for i in self._queue if i.kind == "decide")]]
        return [*self._refused, *waiting]

    async def next_due(self) -> datetime | None:
        candidates = [from_iso(self._queue[0].at)] if self._queue else []
        now = self.runtime.clock.now()
        for approval_id, item in self._decisions.items():
            if await self._decidable(approval_id):
                candidates.append(max(now, from_iso(item.at)))
        return min(candidates) if candidates else None

    async def act(self, now: datetime) -> int:
        done = 0
        stamp = to_iso(now)
        while self._queue and self._queue[0].at <= stamp:
            item = heapq.heappop(self._queue)
            if item.kind == "decide":
                self._decisions[item.data.approval_id] = item
                continue
            await self._apply(item, stamp)
            done += 1
        for approval_id in list(self._decisions):
            if await self._decidable(approval_id):
                approval = self._decisions.pop(approval_id).data
                try:
                    await decide(self.runtime, approval_id, approve=approval.status == "approved",
                                 principal=approval.decided_by, comment=approval.comment or "")
                except UsageError as exc:  # e.g. approving a proposal that failed to parse
                    self._refused.append(Unapplied(approval.run_id, "decision", str(exc)))
                    continue
                done += 1
        return done

    async def _decidable(self, approval_id: str) -> bool:
        approval = await self.runtime.store.get_approval(approval_id)
        return approval is not None and approval.status == "pending"

    async def _apply(self, item: _Input, now: str) -> None:
        store = self.runtime.store
        if item.kind == "start":
            await store.create_run(replace(item.data, updated_at=item.data.created_at))
        elif item.kind == "deliver":
            await store.deliver(replace(item.data, received_at=now, consumed_seq=None), now=now)
        elif item.kind == "kill":
            scope = item.data.get("scope")
            await self.runtime.kill(principal=str(item.data.get("principal")),
                                    reason=str(item.data.get("reason", "")),
                                    run_id=None if scope in (None, "*") else str(scope))

