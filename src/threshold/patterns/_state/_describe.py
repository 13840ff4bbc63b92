"""A run's state rows and guarded timers as lines, for ``threshold runs show``."""

from __future__ import annotations

from threshold.patterns._state._row import NAMESPACE, StateRow
from threshold.store import Store, TimerRecord


async def describe_state(store: Store, run_id: str, *,
                         namespace: str = NAMESPACE) -> list[str]:
    """Lines for the state rows this run owns (the row keyed by the run id, and rows the
    run moved last) and for its pending timers, saying whether each guarded timer will
    fire or lapse given the row's current version. Empty when there is nothing to say."""
    rows: dict[str, StateRow] = {}
    own = await store.get_record(namespace, run_id)
    if own is not None:
        rows[own.key] = StateRow.from_record(own)
    for record in await store.list_records(namespace):
        if isinstance(record.value, dict) and record.value.get("run_id") == run_id:
            rows.setdefault(record.key, StateRow.from_record(record))
    lines = [_row_line(namespace, row) for row in sorted(rows.values(), key=lambda r: r.row_id)]
    for timer in await store.list_timers(run_id, "pending"):
        lines.append(await _timer_line(store, timer))
    return lines


def _row_line(namespace: str, row: StateRow) -> str:
    return (f"state {namespace}/{row.row_id} [{row.machine}]: {row.state} v{row.version}, "
            f"{row.history_len} transition(s), updated {(row.updated_at or '?')[:19]} "
            f"by {row.run_id or '?'}")


async def _timer_line(store: Store, t: TimerRecord) -> str:
    head = f"timer {t.timer_id} '{t.purpose}' pending, due {t.fire_at[:19]}"
    if t.guard_key is None:
        return head + ", unguarded"
    namespace, _, key = t.guard_key.partition("/")
    record = await store.get_record(namespace, key)
    now = 0 if record is None else record.version
    fate = "will fire" if now == t.guard_version else "will lapse (row moved on)"
    return f"{head}, guard {t.guard_key}@v{t.guard_version}, row now v{now}: {fate}"
