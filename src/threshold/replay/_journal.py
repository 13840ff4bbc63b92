"""A run's journal as one value: what replay reads, compares and exports.

Loaded in bulk (one query per table, not per run), so replaying a whole store costs a few
scans, not a few queries per crossing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from threshold.errors import NotFoundError
from threshold.store import (
    ApprovalRecord,
    AttemptRecord,
    CrossingRecord,
    EffectRecord,
    EventRecord,
    MessageRecord,
    RunRecord,
    StepRecord,
    Store,
    TimerRecord,
    VerdictRecord,
)


@dataclass(frozen=True, slots=True)
class CrossingJournal:
    """One crossing with its attempts and verdicts, in attempt order."""

    crossing: CrossingRecord
    attempts: tuple[AttemptRecord, ...]
    verdicts: tuple[VerdictRecord, ...]


@dataclass(slots=True)
class RunJournal:
    """Everything the journal holds about one run that replay needs.

    ``partial``: only the run and its steps are here. Verify-only replay hands back such
    journals (it compares crossings without keeping their rows); ``load_journal`` reads the
    whole of one."""

    run: RunRecord
    steps: dict[int, StepRecord] = field(default_factory=dict)
    crossings: dict[int, CrossingJournal] = field(default_factory=dict)
    effects: list[EffectRecord] = field(default_factory=list)
    approvals: list[ApprovalRecord] = field(default_factory=list)
    messages: list[MessageRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    timers: list[TimerRecord] = field(default_factory=list)
    partial: bool = False

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def last_seq(self) -> int:
        return max([*self.steps, *self.crossings], default=0)


async def load_journals(store: Store, run_ids: Iterable[str] | None = None) -> list[RunJournal]:
    """The journals of ``run_ids`` (every run when None), in the store's run order.

    Raises ``NotFoundError`` for a named run the store does not hold."""
    if run_ids is None:
        runs = await store.list_runs()
    else:
        wanted = list(dict.fromkeys(run_ids))
        found = [await store.get_run(run_id) for run_id in wanted]
        missing = [r for r, run in zip(wanted, found, strict=True) if run is None]
        if missing:
            raise NotFoundError(f"no run {', '.join(map(repr, missing))} in {store.url}")
        runs = [run for run in found if run is not None]
    journals = {run.run_id: RunJournal(run) for run in runs}
    if not journals:
        return []
    # One run: the store's per-run queries; many: one scan of each table.
    scope = runs[0].run_id if len(runs) == 1 else None
    attempts: dict[str, list[AttemptRecord]] = defaultdict(list)
    verdicts: dict[str, list[VerdictRecord]] = defaultdict(list)
    for attempt in await store.list_attempts(scope):
        attempts[attempt.crossing_id].append(attempt)
    for verdict in await store.list_verdicts(scope):
        verdicts[verdict.crossing_id].append(verdict)
    for crossing in await store.list_crossings(scope):
        journal = journals.get(crossing.run_id)
        if journal is not None:
            journal.crossings[crossing.seq] = CrossingJournal(
                crossing, tuple(sorted(attempts[crossing.crossing_id], key=lambda a: a.attempt)),
                tuple(verdicts[crossing.crossing_id]))
    for effect in await store.list_effects(scope):
        if effect.run_id in journals:
            journals[effect.run_id].effects.append(effect)
    for approval in await store.list_approvals(run_id=scope):
        if approval.run_id in journals:
            journals[approval.run_id].approvals.append(approval)
    for event in await store.list_events(scope):
        if event.run_id in journals:
            journals[event.run_id].events.append(event)
    for timer in await store.list_timers(scope):
        if timer.run_id in journals:
            journals[timer.run_id].timers.append(timer)
    for journal in journals.values():
        journal.steps = await store.load_steps(journal.run_id)
        journal.messages = await store.list_messages(journal.run_id)
    return list(journals.values())


async def load_journal(store: Store, run_id: str) -> RunJournal:
    return (await load_journals(store, [run_id]))[0]

