"""The console's state: the store it reads, and the acts it performs through the runtime.

Approvals and the kill switch go through ``Runtime.decide`` and ``Runtime.kill`` (which
refuse principals without the role and journal every use); a policy file, when given,
also names who may pull the kill switch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from threshold.clock import to_iso
from threshold.errors import UnauthorizedError
from threshold.store import ApprovalRecord, EventRecord, Store
from threshold.web._auth import SessionStore, TokenBook

if TYPE_CHECKING:
    from threshold.patterns.policy import Policy
    from threshold.runtime import Runtime


@dataclass
class Console:
    store: Store
    runtime: Runtime | None
    policy: Policy | None
    tokens: TokenBook
    sessions: SessionStore
    reports_dir: Path | None
    secure_cookies: bool = False

    async def acting_runtime(self) -> Runtime:
        """The runtime that performs decisions: the one given, or one on the store whose
        clock is the store's business time (a simulation's virtual time where it stopped)."""
        if self.runtime is not None:
            return self.runtime
        from threshold.patterns.hitl import business_clock, kill_principals
        from threshold.runtime import Runtime

        allowed = None if self.policy is None else kill_principals(self.policy)
        return Runtime(self.store, clock=await business_clock(self.store),
                       kill_principals=allowed)

    async def decide(self, approval_id: str, *, approve: bool, principal: str,
                     comment: str) -> ApprovalRecord:
        runtime = await self.acting_runtime()
        return await runtime.decide(approval_id, approve=approve, principal=principal,
                                    comment=comment)

    async def kill(self, *, principal: str, reason: str, run_id: str | None) -> int:
        runtime = await self.acting_runtime()
        if self.policy is not None:
            from threshold.patterns.policy import may_use_kill_switch

            gate = may_use_kill_switch(self.policy, principal)
            if not gate.allowed:
                await self.store.append_event(EventRecord(run_id, "kill_switch", {
                    "principal": principal, "reason": reason, "scope": run_id or "*",
                    "allowed": False, "policy_version": gate.policy_version,
                    "rule": gate.rule, "why": gate.reason}, to_iso(runtime.clock.now())))
                raise UnauthorizedError(principal, "use the kill switch",
                                        list(self.policy.kill_switch.authorized_principals))
        return await runtime.kill(principal=principal, reason=reason, run_id=run_id)
