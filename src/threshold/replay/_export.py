"""Journals as JSON: a readable, diffable export (golden journals are checked in this way)
and an importer that writes one back into any store through the ``Store`` protocol.

    {"format": "threshold.journal", "version": 1, "runs": [{"run": {...}, "steps": [...],
     "crossings": [{"crossing": {...}, "attempts": [...], "verdicts": [...]}],
     "effects": [...], "approvals": [...], "messages": [...], "events": [...]}]}
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from threshold.errors import DataError
from threshold.replay._journal import CrossingJournal, RunJournal
from threshold.runtime import HUMAN_VERIFIER
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
    VerdictRecord,
)

FORMAT, VERSION = "threshold.journal", 1
T = TypeVar("T")


def export_journals(journals: list[RunJournal]) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "runs": [_export(j) for j in journals]}


def _export(j: RunJournal) -> dict[str, Any]:
    return {
        "run": asdict(j.run),
        "steps": [asdict(j.steps[s]) for s in sorted(j.steps)],
        "crossings": [{"crossing": asdict(c.crossing),
                       "attempts": [asdict(a) for a in c.attempts],
                       "verdicts": [asdict(v) for v in c.verdicts]}
                      for _, c in sorted(j.crossings.items())],
        "effects": [asdict(e) for e in j.effects],
        "approvals": [asdict(a) for a in j.approvals],
        "messages": [asdict(m) for m in j.messages],
        "events": [{k: v for k, v in asdict(e).items() if k != "event_id"} for e in j.events],
    }


def dump_journals(journals: list[RunJournal], path: str | Path) -> None:
    """Write the export with sorted keys and one value per line, so a diff reads well."""
    Path(path).write_text(json.dumps(export_journals(journals), indent=1, sort_keys=True)
                          + "\n", encoding="utf-8")


def parse_journals(data: Any, *, source: str = "<journal>") -> list[RunJournal]:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(source, 1, f"not a {FORMAT} export")
    if data.get("version") != VERSION:
        raise DataError(source, 1, f"{FORMAT} version {data.get('version')!r}; this threshold "
                                   f"reads version {VERSION}")
    try:
        return [_parse(run) for run in data["runs"]]
    except (KeyError, TypeError) as exc:
        raise DataError(source, 1, f"malformed journal export: {exc!r}") from exc


def read_journals(path: str | Path) -> list[RunJournal]:
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(str(path), exc.lineno, f"not JSON: {exc.msg}") from exc
    return parse_journals(data, source=str(path))


def _record(cls: type[T], data: dict[str, Any]) -> T:
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)}")
    return cls(**data)


def _parse(d: dict[str, Any]) -> RunJournal:
    steps = [_record(StepRecord, s) for s in d["steps"]]
    return RunJournal(
        run=_record(RunRecord, d["run"]),
        steps={s.seq: s for s in steps},
        crossings={c["crossing"]["seq"]: CrossingJournal(
            _record(CrossingRecord, c["crossing"]),
            tuple(_record(AttemptRecord, a) for a in c["attempts"]),
            tuple(_record(VerdictRecord, v) for v in c["verdicts"])) for c in d["crossings"]},
        effects=[_record(EffectRecord, e) for e in d["effects"]],
        approvals=[_record(ApprovalRecord, a) for a in d["approvals"]],
        messages=[_record(MessageRecord, m) for m in d["messages"]],
        events=[_record(EventRecord, e) for e in d["events"]],
    )


async def import_journals(store: Store, journals: list[RunJournal]) -> int:
    """Write ``journals`` into ``store`` as they were recorded; returns the runs written.
    Runs the store holds already are left alone (imports are idempotent per run)."""
    written = 0
    for j in journals:
        if await store.create_run(j.run):
            await _import_rest(store, j)
            written += 1
    return written


async def _import_rest(store: Store, j: RunJournal) -> None:
    for m in j.messages:
        await store.deliver(replace(m, consumed_seq=None), now=m.received_at)
    for a in j.approvals:
        await store.create_approval(replace(a, status="pending", decided_by=None,
                                            decided_at=None, comment=None))
        if a.status != "pending":
            wake = next((m for m in j.messages if m.channel == "approval"
                         and m.message_id.startswith(f"{a.approval_id}/")), None) or \
                MessageRecord(a.run_id, f"{a.approval_id}/{a.status}/{a.role}", "approval",
                              {"approval_id": a.approval_id, "status": a.status},
                              a.decided_at or a.created_at)
            await store.decide_approval(a, wake, now=a.decided_at or a.created_at)
    consumed = {m.consumed_seq: m for m in j.messages if m.consumed_seq is not None}
    for seq, c in sorted(j.crossings.items()):
        for attempt in c.attempts:
            verdicts = [v for v in c.verdicts
                        if v.attempt == attempt.attempt and v.verifier != HUMAN_VERIFIER]
            await store.save_attempt(replace(c.crossing, status="open"), attempt, verdicts, None)
        step = j.steps.get(seq)
        if step is not None and step.kind == "cross":
            human = [v for v in c.verdicts if v.verifier == HUMAN_VERIFIER]
            await store.finish_crossing(c.crossing, effect=None, step=step, verdicts=human)
        else:
            await store.save_crossing(c.crossing)
    for seq, step in sorted(j.steps.items()):
        if step.kind == "cross" and seq in j.crossings:
            continue
        if seq in consumed:
            await store.consume_message(consumed[seq], step)
        else:
            await store.record_step(step)
    for e in j.effects:
        await store.begin_effect(replace(e, status="intent", performed=0, result=None,
                                         error=None, done_at=None))
        if e.status != "intent":
            await store.finish_effect(e)
    for event in j.events:
        await store.append_event(replace(event, event_id=None))
