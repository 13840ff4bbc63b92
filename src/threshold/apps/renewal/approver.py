"""The simulated approver: a declared policy that decides pending approvals in simulation.

In a real run the approvals inbox (web or CLI) decides; in simulation this actor does, at
a latency drawn per approval from the seed, so some decisions arrive after the SLA and the
declared fallback applies instead. Stateless: everything it needs is in the store.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from threshold.clock import from_iso
from threshold.errors import UsageError
from threshold.ids import derive_seed
from threshold.runtime import Runtime
from threshold.store import ApprovalRecord


@dataclass(frozen=True, slots=True)
class ApproverPolicy:
    """Approve a discount up to ``max_discount_pct`` for customers of at least
    ``min_tenure_months``; approve mergers for tenure of at least ``merger_min_tenure``;
    deny everything else. Decisions take ``latency_hours`` (uniform)."""

    principal: str = "sim-approver@human_specialist+counsel"
    max_discount_pct: int = 35
    min_tenure_months: int = 24
    merger_min_tenure: int = 12
    latency_hours: tuple[float, float] = (2.0, 60.0)
    version: str = "approver-policy/1"


class SimulatedApprover:
    """An ``Actor`` for the worker loop (see ``threshold.runtime.Actor``)."""

    def __init__(self, runtime: Runtime, policy: ApproverPolicy, seed: int,
                 tenure_of: dict[str, int]) -> None:
        self.runtime, self.policy, self.seed = runtime, policy, seed
        self._tenure_of = tenure_of  # run id -> the customer's tenure in months
        self.decided = 0

    def _due(self, approval: ApprovalRecord) -> datetime:
        rng = random.Random(derive_seed(self.seed, "approver", approval.approval_id,
                                        approval.role))
        return from_iso(approval.created_at) + timedelta(hours=rng.uniform(
            *self.policy.latency_hours))

    async def next_due(self) -> datetime | None:
        pending = await self.runtime.store.list_approvals(status="pending")
        return min((self._due(a) for a in pending), default=None)

    async def act(self, now: datetime) -> int:
        done = 0
        for approval in await self.runtime.store.list_approvals(status="pending"):
            if self._due(approval) > now:
                continue
            approve, why = self.judge(approval)
            try:
                await self.runtime.decide(approval.approval_id, approve=approve,
                                          principal=self.policy.principal, comment=why)
            except UsageError:
                continue  # decided meanwhile, or not decidable by this role
            done += 1
        self.decided += done
        return done

    def judge(self, approval: ApprovalRecord) -> tuple[bool, str]:
        value = approval.value or {}
        tenure = self._tenure_of.get(approval.run_id, 0)
        if not value:
            return False, "no valid proposal to approve"
        if value.get("merger"):
            ok = tenure >= self.policy.merger_min_tenure
            return ok, f"merger, tenure {tenure} months ({self.policy.version})"
        pct = int(value.get("discount_pct", 0))
        ok = pct <= self.policy.max_discount_pct and tenure >= self.policy.min_tenure_months
        return ok, f"{pct}% for tenure {tenure} months ({self.policy.version})"
