"""Read models behind the pages and the API: run summaries with their pattern tags, and one
run's crossings with attempts, verdicts, effect and human decision. Pure reads."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from threshold.runtime import HUMAN_VERIFIER
from threshold.store import (
    ApprovalRecord,
    AttemptRecord,
    CrossingRecord,
    EffectRecord,
    EventRecord,
    MessageRecord,
    RunRecord,
    Store,
    TimerRecord,
    VerdictRecord,
)
from threshold.timeline import Timeline, run_timeline

PATTERNS: dict[str, str] = {
    "P1": "hierarchical delegation", "P2": "scatter-gather + saga",
    "P3": "event-driven sequencing", "P4": "supervisor + gate",
    "P5": "shared state machine", "P6": "human in the loop",
}
_BY_EVENT_KIND = (
    ("delegation.", "P1"), ("saga.", "P2"), ("fanout.", "P2"), ("topic.", "P3"),
    ("gate.", "P4"), ("throttle.", "P4"), ("supervisor.", "P4"), ("kill_switch", "P4"),
    ("state.", "P5"), ("approval.", "P6"), ("escalated", "P6"),
)


def derive_patterns(events: Iterable[EventRecord], *, approvals: int,
                    has_state: bool) -> tuple[str, ...]:
    """The patterns a run's journal shows it used: its event kinds (saga.* is P2, state.* is
    P5, ...), events that name a topic (P3), approvals (P6) and a state row (P5)."""
    found: set[str] = set()
    for event in events:
        found.update(p for prefix, p in _BY_EVENT_KIND if event.kind.startswith(prefix))
        if "topic" in event.data:
            found.add("P3")
    if approvals:
        found.add("P6")
    if has_state:
        found.add("P5")
    return tuple(sorted(found))


def run_outcome(run: RunRecord) -> str | None:
    """``result.outcome`` of a finished run, when its result names one."""
    if isinstance(run.result, dict):
        outcome = run.result.get("outcome")
        if isinstance(outcome, str | int | float | bool):
            return str(outcome)
    return None


@dataclass(frozen=True, slots=True)
class RunSummary:
    run: RunRecord
    outcome: str | None
    patterns: tuple[str, ...]
    pending_approvals: int


@dataclass(frozen=True, slots=True)
class RunListing:
    runs: list[RunSummary]
    matched: int
    states: dict[str, int]
    outcomes: dict[str, int]
    patterns: dict[str, int]


async def list_runs(store: Store, *, state: str | None = None, outcome: str | None = None,
                    pattern: str | None = None, limit: int = 200) -> RunListing:
    """Runs newest first, filtered; the facet counts cover every run so filters can be
    offered. Three bulk reads, not one per run: the console must open on a 7,043-run store."""
    runs = await store.list_runs()
    events: dict[str | None, list[EventRecord]] = defaultdict(list)
    for e in await store.list_events():
        events[e.run_id].append(e)
    approvals: Counter[str] = Counter()
    pending: Counter[str] = Counter()
    for a in await store.list_approvals():
        approvals[a.run_id] += 1
        pending[a.run_id] += a.status == "pending"
    states = {r.key for r in await store.list_records("state")}
    summaries = [RunSummary(r, run_outcome(r), derive_patterns(
        events.get(r.run_id, ()), approvals=approvals[r.run_id],
        has_state=r.run_id in states), pending[r.run_id]) for r in runs]
    facets = (Counter(s.run.status for s in summaries),
              Counter(s.outcome for s in summaries if s.outcome is not None),
              Counter(p for s in summaries for p in s.patterns))
    chosen = [s for s in summaries
              if (state is None or s.run.status == state)
              and (outcome is None or s.outcome == outcome)
              and (pattern is None or pattern in s.patterns)]
    chosen.sort(key=lambda s: (s.run.updated_at, s.run.run_id), reverse=True)
    return RunListing(chosen[:limit], len(chosen), *(dict(sorted(f.items())) for f in facets))


@dataclass(frozen=True, slots=True)
class AttemptView:
    record: AttemptRecord
    verdicts: list[VerdictRecord]

    @property
    def accepted(self) -> bool:
        return bool(self.verdicts) and all(v.verdict == "accept" for v in self.verdicts)


@dataclass(frozen=True, slots=True)
class CrossingView:
    record: CrossingRecord
    attempts: list[AttemptView]
    human: list[VerdictRecord]
    effect: EffectRecord | None
    approval: ApprovalRecord | None


@dataclass(frozen=True, slots=True)
class RunView:
    timeline: Timeline
    crossings: list[CrossingView]
    patterns: tuple[str, ...]
    outcome: str | None
    messages: list[MessageRecord]
    timers: list[TimerRecord]
    events: list[EventRecord] = field(default_factory=list)

    @property
    def run(self) -> RunRecord:
        return self.timeline.run


async def run_view(store: Store, run_id: str) -> RunView | None:
    timeline = await run_timeline(store, run_id)
    if timeline is None:
        return None
    attempts: dict[str, list[AttemptRecord]] = defaultdict(list)
    for a in await store.list_attempts(run_id):
        attempts[a.crossing_id].append(a)
    verdicts: dict[tuple[str, int], list[VerdictRecord]] = defaultdict(list)
    human: dict[str, list[VerdictRecord]] = defaultdict(list)
    for v in await store.list_verdicts(run_id):
        if v.verifier == HUMAN_VERIFIER or v.decided_by is not None:
            human[v.crossing_id].append(v)
        else:
            verdicts[(v.crossing_id, v.attempt)].append(v)
    effects = {e.crossing_id: e for e in await store.list_effects(run_id) if e.crossing_id}
    approvals = {a.crossing_id: a for a in timeline.approvals}
    crossings = [CrossingView(c, [AttemptView(a, verdicts[(c.crossing_id, a.attempt)])
                                  for a in sorted(attempts[c.crossing_id],
                                                  key=lambda a: a.attempt)],
                              human[c.crossing_id], effects.get(c.crossing_id),
                              approvals.get(c.crossing_id))
                 for c in sorted(await store.list_crossings(run_id), key=lambda c: c.seq)]
    events = await store.list_events(run_id)
    return RunView(timeline, crossings,
                   derive_patterns(events, approvals=len(timeline.approvals),
                                   has_state=timeline.state is not None),
                   run_outcome(timeline.run), await store.list_messages(run_id),
                   await store.list_timers(run_id), events)


def jsonable(value: Any) -> Any:
    """Journal values are JSON already; this only guards the odd non-JSON leaf."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)
