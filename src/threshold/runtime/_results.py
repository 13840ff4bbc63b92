"""What a crossing returns to agent code."""

from __future__ import annotations

from dataclasses import field
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from threshold._record import record
from threshold.boundary import Reject

M = TypeVar("M", bound=BaseModel)

Outcome = Literal["committed", "aborted", "denied", "failed"]


@record
class Crossing(Generic[M]):
    """The end of one pass through a boundary. ``value`` is set only when committed.

    A reject is never a success: ``committed`` is False for every other outcome, and
    ``effect_result`` exists only when the commit ran."""

    boundary: str
    outcome: Outcome
    attempts: int
    value: M | None = None
    effect_result: Any = None
    rejects: tuple[Reject, ...] = ()
    reason: str = ""
    decided_by: str | None = None
    crossing_id: str = ""
    proposal_hash: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def committed(self) -> bool:
        return self.outcome == "committed"

    def to_json(self) -> dict[str, Any]:
        return {
            "boundary": self.boundary, "outcome": self.outcome, "attempts": self.attempts,
            "value": None if self.value is None else self.value.model_dump(mode="json"),
            "effect_result": self.effect_result,
            "rejects": [[r.code, r.message, r.retryable, r.hint, r.field] for r in self.rejects],
            "reason": self.reason, "decided_by": self.decided_by,
            "crossing_id": self.crossing_id, "proposal_hash": self.proposal_hash,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], output: type[M]) -> Crossing[M]:
        value = data.get("value")
        return cls(
            boundary=data["boundary"], outcome=data["outcome"], attempts=data["attempts"],
            value=None if value is None else output.model_validate(value),
            effect_result=data.get("effect_result"),
            rejects=tuple(Reject(c, m, bool(r), h or "", f) for c, m, r, h, f in data["rejects"]),
            reason=data.get("reason", ""), decided_by=data.get("decided_by"),
            crossing_id=data.get("crossing_id", ""), proposal_hash=data.get("proposal_hash"),
        )
