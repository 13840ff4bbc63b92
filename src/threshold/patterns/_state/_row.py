"""The state row as stored: one versioned record per row, ``state/<row_id>``.

The record's version is the row's version; the value holds the machine's name, the state,
the accumulated payload, how many transitions it has seen, the run that last moved it and
the idempotency key of that move (so a write resumed after a crash recognises itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from threshold.store import VersionedRecord

NAMESPACE = "state"
TRANSITION = "state.transition"
OVERRIDE = "state.override"
STALE = "state.stale_write"  # a kind the diagnose tool reads as a lost compare-and-swap
MOVES = (TRANSITION, OVERRIDE)


@dataclass(frozen=True, slots=True)
class StateRow:
    """A row at one version. Version 0 is a row not written yet, in the initial state."""

    row_id: str
    machine: str
    state: str
    version: int
    payload: dict[str, Any] = field(default_factory=dict)
    history_len: int = 0
    run_id: str | None = None
    last_key: str | None = None
    updated_at: str | None = None

    def value(self) -> dict[str, Any]:
        """The record value (``version`` and ``updated_at`` live on the record itself)."""
        return {"machine": self.machine, "state": self.state, "payload": self.payload,
                "history_len": self.history_len, "run_id": self.run_id,
                "last_key": self.last_key}

    def to_json(self) -> dict[str, Any]:
        return {**self.value(), "row_id": self.row_id, "version": self.version,
                "updated_at": self.updated_at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StateRow:
        return cls(row_id=data["row_id"], machine=data["machine"], state=data["state"],
                   version=int(data["version"]), payload=dict(data.get("payload") or {}),
                   history_len=int(data.get("history_len") or 0), run_id=data.get("run_id"),
                   last_key=data.get("last_key"), updated_at=data.get("updated_at"))

    @classmethod
    def from_record(cls, record: VersionedRecord) -> StateRow:
        value = record.value if isinstance(record.value, dict) else {}
        return cls.from_json({**value, "row_id": record.key, "version": record.version,
                              "updated_at": record.updated_at,
                              "machine": value.get("machine", "?"),
                              "state": value.get("state", "?")})
