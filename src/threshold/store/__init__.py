"""Stores: the durable journal behind the runtime, chosen by URL."""

from threshold.store._open import open_store
from threshold.store._protocol import Store
from threshold.store._records import (
    TERMINAL_CROSSING_STATUSES,
    TERMINAL_RUN_STATUSES,
    ApprovalRecord,
    AttemptRecord,
    AuditRows,
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
from threshold.store._schema import SCHEMA_VERSION
from threshold.store._sqlite import SQLiteStore

__all__ = [
    "SCHEMA_VERSION",
    "TERMINAL_CROSSING_STATUSES",
    "TERMINAL_RUN_STATUSES",
    "ApprovalRecord",
    "AttemptRecord",
    "AuditRows",
    "CrossingRecord",
    "CrossingState",
    "EffectRecord",
    "EventRecord",
    "MessageRecord",
    "RunRecord",
    "SQLiteStore",
    "StepRecord",
    "Store",
    "TimerRecord",
    "TopicEvent",
    "VerdictRecord",
    "VersionedRecord",
    "open_store",
]
