"""What a rejection does: retry with feedback, escalate to a person, or abort."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from threshold.boundary._verdict import Reject


@dataclass(frozen=True, slots=True)
class Retry:
    """Feed the reject reasons back to the proposer and ask again."""

    kind: Literal["retry"] = "retry"


@dataclass(frozen=True, slots=True)
class ApproveWithCap:
    """Approval fallback that clamps a numeric field of the proposal to ``cap``."""

    field: str
    cap: float
    kind: Literal["approve_with_cap"] = "approve_with_cap"


Fallback = Literal["deny", "approve"] | ApproveWithCap


@dataclass(frozen=True, slots=True)
class Escalate:
    """Suspend the crossing durably until a principal with ``role`` decides.

    With ``sla`` set, an undecided approval applies ``fallback`` when the SLA lapses;
    ``reroute_to`` names a second role that gets the request instead of the fallback once.
    """

    role: str = "human_specialist"
    reason: str = ""
    sla: timedelta | None = None
    fallback: Fallback = "deny"
    reroute_to: str | None = None
    kind: Literal["escalate"] = "escalate"


@dataclass(frozen=True, slots=True)
class Abort:
    """End the crossing without a commit (inside a saga: compensate)."""

    reason: str = ""
    kind: Literal["abort"] = "abort"


RejectAction = Retry | Escalate | Abort


@dataclass(frozen=True, slots=True)
class RejectPolicy:
    """Maps the rejects of one attempt to an action.

    ``routes`` sends a reject code (or a code prefix ending in ``.``) straight to an action,
    so a policy breach escalates at once instead of burning retries. Otherwise retryable
    rejects retry while attempts remain; then ``exhausted`` applies.
    """

    max_attempts: int = 3
    exhausted: Escalate | Abort = Abort("retry budget exhausted")
    routes: Mapping[str, Escalate | Abort] = field(default_factory=dict)

    def decide(self, rejects: Sequence[Reject], attempt: int) -> RejectAction:
        for reject in rejects:
            routed = self._route(reject.code)
            if routed is not None:
                return routed
        if all(r.retryable for r in rejects) and attempt < self.max_attempts:
            return Retry()
        return self.exhausted

    def _route(self, code: str) -> Escalate | Abort | None:
        if code in self.routes:
            return self.routes[code]
        for prefix, action in self.routes.items():
            if prefix.endswith(".") and code.startswith(prefix):
                return action
        return None


@dataclass(frozen=True, slots=True)
class TransportPolicy:
    """Retries for failures before any text exists; these never reach the model as feedback.

    Backoff waits are durable timers: a crash during a backoff loses nothing.
    """

    max_retries: int = 3
    backoff: timedelta = timedelta(seconds=1)
    max_backoff: timedelta = timedelta(seconds=60)
    exhausted: Escalate | Abort = Abort("model unavailable")

    def delay(self, failures: int, retry_after: float | None) -> timedelta:
        computed: timedelta = min(self.backoff * (2 ** (failures - 1)), self.max_backoff)
        if retry_after is not None:
            computed = max(computed, timedelta(seconds=retry_after))
        return computed
