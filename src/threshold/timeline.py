"""A run's journal as one chronological timeline: the read model behind ``runs show`` and
the web console. Pure data in, data out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from threshold.store import (
    ApprovalRecord,
    CrossingRecord,
    RunRecord,
    Store,
    TimerRecord,
    VersionedRecord,
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a timeline: when, what kind, a one-line summary, and the detail."""

    at: str
    kind: str
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Timeline:
    run: RunRecord
    entries: list[Entry]
    pending_timers: list[TimerRecord]
    approvals: list[ApprovalRecord]
    state: VersionedRecord | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": asdict(self.run),
            "entries": [asdict(e) for e in self.entries],
            "pending_timers": [asdict(t) for t in self.pending_timers],
            "approvals": [asdict(a) for a in self.approvals],
            "state": None if self.state is None else asdict(self.state),
        }


async def run_timeline(store: Store, run_id: str) -> Timeline | None:
    run = await store.get_run(run_id)
    if run is None:
        return None
    crossings = {c.crossing_id: c for c in await store.list_crossings(run_id)}
    attempts = await store.list_attempts(run_id)
    verdicts = await store.list_verdicts(run_id)
    effects = {e.crossing_id: e for e in await store.list_effects(run_id) if e.crossing_id}
    entries: list[Entry] = [Entry(run.created_at, "run.created", f"{run.agent}@"
                                  f"{run.agent_version} model={run.pins.get('model')}")]
    for a in attempts:
        c = crossings[a.crossing_id]
        if a.kind == "transport_error":
            entries.append(Entry(a.at, "transport", f"{c.boundary} #{a.attempt}: "
                                 f"{a.error_kind}: {a.error_message} (retry at {a.retry_at})"))
            continue
        mine = [v for v in verdicts if v.crossing_id == a.crossing_id and v.attempt == a.attempt]
        marks = ", ".join(f"{v.verifier}={'ok' if v.verdict == 'accept' else v.code}"
                          for v in mine)
        prov = a.provenance or {}
        entries.append(Entry(a.at, "proposal", f"{c.boundary} #{a.attempt} "
                             f"[{prov.get('model_id')}@{prov.get('model_version')}] "
                             f"{_short(a.value if a.value is not None else a.raw)} -> {marks}",
                             {"hash": a.proposal_hash, "provenance": prov}))
    for c in crossings.values():
        if c.ended_at:
            entries.append(Entry(c.ended_at, f"crossing.{c.status}", _crossing_line(c, effects)))
    for v in verdicts:
        if v.decided_by is not None:
            entries.append(Entry(v.at, "human", f"{v.verifier}({v.verifier_version}) "
                                 f"{v.verdict} by {v.decided_by}: {v.message or ''}"))
    for e in await store.list_events(run_id):
        entries.append(Entry(e.at, e.kind, _short(e.data, 160), e.data))
    for m in await store.list_messages(run_id):
        entries.append(Entry(m.received_at, "message", f"{m.channel} {m.message_id}: "
                             f"{_short(m.payload)}"))
    timers = await store.list_timers(run_id)
    for t in timers:
        if t.status != "pending":
            entries.append(Entry(t.fired_at or t.fire_at, f"timer.{t.status}",
                                 f"{t.purpose} due {t.fire_at}"))
    if run.status in ("completed", "failed", "killed", "stranded"):
        entries.append(Entry(run.updated_at, f"run.{run.status}",
                             _short(run.result if run.error is None else run.error, 200)))
    entries.sort(key=lambda e: e.at)
    return Timeline(run, entries, [t for t in timers if t.status == "pending"],
                    await store.list_approvals(run_id=run_id),
                    await store.get_record("state", run_id))


def render_timeline(timeline: Timeline) -> list[str]:
    run = timeline.run
    lines = [f"run {run.run_id}  {run.agent}@{run.agent_version}  status={run.status}  "
             f"seed={run.seed}", f"  pins: {run.pins}"]
    if timeline.state is not None:
        s = timeline.state
        lines.append(f"  state: {_short(s.value, 120)} (version {s.version}, {s.updated_at})")
    for e in timeline.entries:
        lines.append(f"  {e.at[:19]}  {e.kind:<22} {e.summary}")
    for t in timeline.pending_timers:
        guard = f" guard={t.guard_key}@v{t.guard_version}" if t.guard_key else ""
        lines.append(f"  pending timer {t.purpose} at {t.fire_at}{guard}")
    for a in timeline.approvals:
        lines.append(f"  approval {a.approval_id} [{a.status}] role={a.role} sla={a.sla_due} "
                     f"decided_by={a.decided_by}")
    return lines


def _crossing_line(c: CrossingRecord, effects: dict[str, Any]) -> str:
    effect = effects.get(c.crossing_id)
    tail = f" effect={effect.status}:{_short(effect.result, 60)}" if effect else ""
    why = f" reason={c.reason}" if c.reason and c.status != "committed" else ""
    return f"{c.boundary} after {c.attempts} attempt(s) {_short(c.outcome, 80)}{tail}{why}"


def _short(value: Any, limit: int = 100) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"
