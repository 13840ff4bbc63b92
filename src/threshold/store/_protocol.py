"""The ``Store`` seam. Every backend passes one contract suite (``threshold.testing``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from threshold.store._records import (
    ApprovalRecord,
    AttemptRecord,
    CrossingRecord,
    CrossingState,
    EffectRecord,
    EventRecord,
    MessageRecord,
    RunRecord,
    StepRecord,
    TimerRecord,
    TopicEvent,
    VerdictRecord,
    VersionedRecord,
)


@runtime_checkable
class Store(Protocol):
    """Durable journal and coordination state. All writes of one method are one transaction."""

    url: str

    async def close(self) -> None: ...

    # runs --------------------------------------------------------------------------------
    async def create_run(self, run: RunRecord) -> bool:
        """Insert unless ``run_id`` exists; True if inserted (starting a run is idempotent)."""
        ...

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def list_runs(
        self, *, status: str | None = None, agent: str | None = None, limit: int | None = None
    ) -> list[RunRecord]: ...

    async def count_runs(self) -> dict[str, int]:
        """Runs per status."""
        ...

    async def finish_run(
        self, run_id: str, *, status: str, now: str, result: Any = None, error: str | None = None
    ) -> None:
        """Set a terminal status and release the lease."""
        ...

    async def suspend_run(self, run_id: str, *, owner: str, now: str) -> None:
        """running -> waiting, unless something woke it meanwhile (then -> ready)."""
        ...

    async def set_run_pins(self, run_id: str, pins: dict[str, Any], *, now: str) -> None: ...

    async def migrate_run(self, run_id: str, *, agent_version: str, pins: dict[str, Any],
                          event: EventRecord, now: str) -> bool:
        """Move a run that is not executing or finished to another agent version and pins,
        ready again, journaling ``event`` in the same write; False if it may not move."""
        ...

    async def claim_runs(
        self, owner: str, *, now: str, lease_until: str, limit: int, dead_owners: Sequence[str],
        agents: Sequence[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """Lease ready runs, and running runs whose lease expired or whose owner is dead.
        With ``agents``, only runs of those (agent, version) pairs: a worker takes what it
        can execute and leaves other versions to the workers that deploy them."""
        ...

    async def lease_owners(self) -> list[str]: ...

    async def renew_leases(self, owner: str, *, lease_until: str) -> int: ...

    async def release_run(self, run_id: str, owner: str) -> None:
        """Give a leased run back as ready (a worker stopping without finishing it)."""
        ...

    async def wake_run(self, run_id: str, *, now: str) -> bool:
        """waiting -> ready; True if it was waiting."""
        ...

    # steps -------------------------------------------------------------------------------
    async def load_steps(self, run_id: str) -> dict[int, StepRecord]: ...

    async def record_step(self, step: StepRecord) -> None: ...

    async def journal_head(self, run_id: str) -> tuple[int, int, list[int]]:
        """The run's last journaled step, its number of steps, and the positions of its
        crossings still open (begun, not finished): enough for a worker to tell whether its
        cached journal of the run is current, and where to resume."""
        ...

    # crossings ---------------------------------------------------------------------------
    async def load_crossing(self, crossing_id: str) -> CrossingState | None: ...

    async def save_attempt(
        self,
        crossing: CrossingRecord,
        attempt: AttemptRecord,
        verdicts: Sequence[VerdictRecord],
        intent: EffectRecord | None,
    ) -> EffectRecord | None:
        """Upsert the crossing, insert the attempt and its verdicts, and record the effect
        intent if there is one (returning the stored intent, which may be older)."""
        ...

    async def save_crossing(self, crossing: CrossingRecord) -> None: ...

    async def finish_crossing(
        self,
        crossing: CrossingRecord,
        *,
        effect: EffectRecord | None,
        step: StepRecord | None,
        verdicts: Sequence[VerdictRecord] = (),
    ) -> None:
        """Record the final crossing row, the effect result and the run step together."""
        ...

    async def list_crossings(self, run_id: str | None = None) -> list[CrossingRecord]: ...

    async def list_attempts(self, run_id: str | None = None) -> list[AttemptRecord]: ...

    async def list_verdicts(self, run_id: str | None = None) -> list[VerdictRecord]: ...

    # effects -----------------------------------------------------------------------------
    async def begin_effect(self, intent: EffectRecord) -> EffectRecord:
        """Insert the intent unless the key exists; return the stored row either way."""
        ...

    async def finish_effect(
        self, effect: EffectRecord, *, step: StepRecord | None = None
    ) -> None: ...

    async def get_effect(self, key: str) -> EffectRecord | None: ...

    async def list_effects(self, run_id: str | None = None) -> list[EffectRecord]: ...

    # timers ------------------------------------------------------------------------------
    async def add_timer(self, timer: TimerRecord) -> None: ...

    async def get_timer(self, timer_id: str) -> TimerRecord | None: ...

    async def fire_due_timers(self, now: str, *, limit: int = 10_000) -> list[TimerRecord]:
        """Fire (or lapse, when the guard moved) every pending timer due by ``now`` and wake
        the runs of the fired ones. Returns the timers with their new status."""
        ...

    async def next_timer_at(self) -> str | None: ...

    async def list_timers(
        self, run_id: str | None = None, status: str | None = None
    ) -> list[TimerRecord]: ...

    async def cancel_timer(self, timer_id: str) -> None: ...

    # inbox -------------------------------------------------------------------------------
    async def deliver(self, message: MessageRecord, *, now: str) -> bool:
        """Insert unless (run, message_id) exists, and wake the run; True if new."""
        ...

    async def next_message(self, run_id: str, channel: str) -> MessageRecord | None: ...

    async def consume_message(self, message: MessageRecord, step: StepRecord) -> None: ...

    async def list_messages(self, run_id: str) -> list[MessageRecord]: ...

    # approvals ---------------------------------------------------------------------------
    async def create_approval(self, approval: ApprovalRecord) -> None: ...

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None: ...

    async def list_approvals(
        self, *, status: str | None = None, run_id: str | None = None
    ) -> list[ApprovalRecord]: ...

    async def decide_approval(
        self, approval: ApprovalRecord, message: MessageRecord, *, now: str
    ) -> bool:
        """Write a decision if the approval is still pending, and deliver ``message`` to the
        run in the same transaction. False if someone decided first."""
        ...

    # journal events ----------------------------------------------------------------------
    async def append_event(self, event: EventRecord, *, step: StepRecord | None = None) -> int:
        """Journal ``event`` (and the run step that wrote it, if given) in one write."""
        ...

    async def list_events(
        self, run_id: str | None = None, kind: str | None = None
    ) -> list[EventRecord]: ...

    # versioned records (compare-and-swap) ------------------------------------------------
    async def get_record(self, namespace: str, key: str) -> VersionedRecord | None: ...

    async def cas_record(
        self, namespace: str, key: str, *, expected_version: int, value: Any, now: str,
        event: EventRecord | None = None,
    ) -> VersionedRecord | None:
        """Write version ``expected_version + 1`` if the row is at ``expected_version``
        (0: absent). None if the row moved on. ``event`` is journaled in the same write."""
        ...

    async def list_records(self, namespace: str) -> list[VersionedRecord]: ...

    # topics ------------------------------------------------------------------------------
    async def append_topic(
        self, topic: str, *, key: str | None, payload: Any, headers: dict[str, Any],
        event_time: str, now: str,
    ) -> int: ...

    async def read_topic(self, topic: str, *, after: int, limit: int) -> list[TopicEvent]: ...

    async def list_topics(self) -> list[tuple[str, int]]:
        """(topic, last offset) for every topic."""
        ...

    # meta --------------------------------------------------------------------------------
    async def get_meta(self, key: str) -> str | None: ...

    async def set_meta(self, key: str, value: str) -> None: ...
