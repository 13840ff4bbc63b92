"""P4 gates: policy, budget and role rules as verifiers placed before every side effect.

A gate is a ``Verifier`` whose version is the policy version, so every verdict it writes
names the policy that decided. The rule and the reason travel in the verdict itself: a
reject's code is ``policy.<rule>`` and its message ends ``[rule R, policy V]``; an accept's
note reads ``rule=R policy=V [warn] [sampled] reason=...``.

Warn-band decisions (allowed, but at or above a warn level) go to a ``ReviewQueue``: one
record per (run, step, attempt, gate), written with its ``gate.warn`` journal event in the
same transaction. The write is idempotent, so re-verifying the same attempt (a resume, a
replay into the same store) never adds a second entry. The share sent for human review is
drawn deterministically from the run id and the proposal hash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from threshold.boundary import Accept, Reject, Verdict, VerifyContext
from threshold.clock import to_iso
from threshold.errors import NotFoundError, StaleWriteError
from threshold.ids import derive_seed, digest
from threshold.patterns.policy import (
    GateDecision,
    Policy,
    check_discount,
    check_term,
    escalation_for,
)
from threshold.runtime import principal_roles
from threshold.runtime._approvals import required_roles
from threshold.store import EventRecord, Store, VersionedRecord

M = TypeVar("M", bound=BaseModel)

GateRule = Callable[[Policy, M, VerifyContext, float], GateDecision]
"""``rule(policy, proposal, ctx, sample) -> GateDecision``; ``sample`` is in [0, 1)."""

REVIEW_NAMESPACE = "review"


def review_sample(run_id: str, value: BaseModel) -> float:
    """A draw in [0, 1) fixed by the run and the proposal: the same proposal in the same run
    is always sampled the same way, on resume and on replay."""
    proposal_hash = digest(value.model_dump(mode="json"))
    return derive_seed("review", run_id, proposal_hash) / 2**63


def to_verdict(decision: GateDecision, *, retryable: bool = True,
               field: str | None = None) -> Verdict:
    """A gate decision as a verdict that carries its rule, reason and policy version."""
    if decision.allowed:
        flags = (" warn" if decision.warn else "") + (
            " sampled" if decision.sampled_for_review else "")
        return Accept(note=f"rule={decision.rule} policy={decision.policy_version}{flags} "
                           f"reason={decision.reason}")
    hint = f"this needs {decision.escalate_to}" if decision.escalate_to else ""
    return Reject(f"policy.{decision.rule}",
                  f"{decision.reason} [rule {decision.rule}, policy {decision.policy_version}]",
                  retryable=retryable, hint=hint, field=field)


class PolicyGate(Generic[M]):
    """A verifier from a pure policy rule. ``retryable`` says whether the proposer can fix a
    breach by proposing again (a lower discount: yes; a merger that needs a human: no)."""

    def __init__(self, name: str, policy: Policy, rule: GateRule[M], *,
                 retryable: bool = True, field: str | None = None,
                 review: ReviewQueue | None = None) -> None:
        self._name, self._policy, self._rule = name, policy, rule
        self._retryable, self._field, self._review = retryable, field, review

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self._policy.version

    async def check(self, value: M, ctx: VerifyContext) -> Verdict:
        decision = self._rule(self._policy, value, ctx, review_sample(ctx.run_id, value))
        if decision.warn and self._review is not None:
            await self._review.record_warn(ctx, self._name, decision, value)
        return to_verdict(decision, retryable=self._retryable, field=self._field)

    def __repr__(self) -> str:
        return f"PolicyGate({self._name!r}, policy={self._policy.version!r})"


def fact(ctx: VerifyContext, value: BaseModel, name: str) -> Any:
    """A named input of a gate: the crossing's facts first, then its inputs, then the
    proposal's own field of that name."""
    if name in ctx.facts:
        return ctx.facts[name]
    if name in ctx.inputs:
        return ctx.inputs[name]
    return getattr(value, name, None)


def discount_gate(policy: Policy, *, pct_field: str = "discount_pct",
                  tenant_fact: str = "tenant", name: str = "policy.discount",
                  review: ReviewQueue | None = None) -> PolicyGate[BaseModel]:
    """Gate the proposal's ``pct_field`` against the discount cap (the tenant's override if
    it has one); warn-band discounts go to ``review``."""

    def rule(p: Policy, value: BaseModel, ctx: VerifyContext, sample: float) -> GateDecision:
        tenant = fact(ctx, value, tenant_fact)
        return check_discount(p, "" if tenant is None else str(tenant),
                              float(getattr(value, pct_field)), sample=sample)

    return PolicyGate(name, policy, rule, field=pct_field, review=review)


def term_gate(policy: Policy, *, months_field: str = "term_months",
              merger_fact: str = "is_merger", name: str = "policy.term") -> PolicyGate[BaseModel]:
    """Whether a renewal of the proposal's ``months_field`` may close without a human."""

    def rule(p: Policy, value: BaseModel, ctx: VerifyContext, sample: float) -> GateDecision:
        return check_term(p, int(getattr(value, months_field)),
                          bool(fact(ctx, value, merger_fact)))

    return PolicyGate(name, policy, rule, retryable=False, field=months_field)


def trigger_gate(policy: Policy, kind: str, *, when: Callable[[BaseModel, VerifyContext], bool],
                 name: str | None = None) -> PolicyGate[BaseModel]:
    """Refuse (for a human to decide) whenever ``when`` holds and the policy lists an
    escalation trigger of ``kind``, e.g. ``pii_present``."""

    def rule(p: Policy, value: BaseModel, ctx: VerifyContext, sample: float) -> GateDecision:
        decision = escalation_for(p, kind)
        if when(value, ctx) or decision.allowed:
            return decision
        return GateDecision(True, decision.rule, f"no {kind} here", p.version)

    return PolicyGate(name or f"policy.trigger.{kind}", policy, rule, retryable=False)


def role_gate(policy: Policy, role: str, *, principal_fact: str = "principal",
              name: str | None = None) -> PolicyGate[BaseModel]:
    """Only a run acting for a principal with ``role`` (``a+b``: every one of them) may
    commit; the principal is a fact of the crossing."""

    def rule(p: Policy, value: BaseModel, ctx: VerifyContext, sample: float) -> GateDecision:
        principal = fact(ctx, value, principal_fact)
        who = "nobody" if principal is None else str(principal)
        held = set() if principal is None else principal_roles(str(principal))
        if required_roles(role) <= held or "admin" in held:
            return GateDecision(True, f"role.{role}", f"{who} holds {role}", p.version)
        return GateDecision(False, f"role.{role}", f"{who} does not hold {role}", p.version,
                            escalate_to=role)

    return PolicyGate(name or f"policy.role.{role}", policy, rule, retryable=False)


# --- the sampled review queue -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """One warn-band decision. ``sampled`` items wait for a reviewer; the rest are journal."""

    run_id: str
    step: int
    attempt: int
    boundary: str
    gate: str
    rule: str
    reason: str
    policy_version: str
    proposal_hash: str
    value: dict[str, Any]
    sampled: bool
    at: str
    status: Literal["pending", "ok", "flagged", "unsampled"] = "pending"
    reviewed_by: str | None = None
    comment: str | None = None


class ReviewQueue:
    """Warn-band decisions in the store, under ``review/<run>/<step>/<attempt>/<gate>``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def record_warn(self, ctx: VerifyContext, gate: str, decision: GateDecision,
                          value: BaseModel) -> bool:
        """Journal the warn and queue it (for review if sampled); False if already there."""
        data = value.model_dump(mode="json")
        item = ReviewItem(ctx.run_id, ctx.step, ctx.attempt, ctx.boundary, gate, decision.rule,
                          decision.reason, decision.policy_version, digest(data), data,
                          decision.sampled_for_review, to_iso(ctx.now),
                          "pending" if decision.sampled_for_review else "unsampled")
        key = f"{ctx.run_id}/{ctx.step}/{ctx.attempt}/{gate}"
        event = EventRecord(ctx.run_id, "gate.warn", {
            "review_key": key, "gate": gate, "rule": decision.rule, "reason": decision.reason,
            "policy_version": decision.policy_version, "sampled": item.sampled,
            "proposal_hash": item.proposal_hash}, item.at)
        written = await self.store.cas_record(REVIEW_NAMESPACE, key, expected_version=0,
                                              value=asdict(item), now=item.at, event=event)
        return written is not None

    async def items(self, *, status: str | None = "pending") -> list[tuple[str, ReviewItem]]:
        """(key, item) pairs, oldest first; ``status=None`` lists every warn."""
        rows = await self.store.list_records(REVIEW_NAMESPACE)
        found = [(r.key, ReviewItem(**r.value)) for r in rows]
        found = [(k, i) for k, i in found if status is None or i.status == status]
        return sorted(found, key=lambda pair: (pair[1].at, pair[0]))

    async def resolve(self, key: str, *, principal: str, ok: bool, comment: str = "",
                      now: str) -> VersionedRecord:
        """Record a reviewer's finding; a second finding on the same item is refused."""
        row = await self.store.get_record(REVIEW_NAMESPACE, key)
        if row is None:
            raise NotFoundError(f"no review item {key!r}")
        item = ReviewItem(**row.value)
        if item.status not in ("pending", "unsampled"):
            raise StaleWriteError(f"{REVIEW_NAMESPACE}/{key}", row.version, row.version)
        done = {**row.value, "status": "ok" if ok else "flagged", "reviewed_by": principal,
                "comment": comment}
        event = EventRecord(item.run_id, "gate.reviewed", {
            "review_key": key, "by": principal, "ok": ok, "comment": comment}, now)
        written = await self.store.cas_record(REVIEW_NAMESPACE, key,
                                              expected_version=row.version, value=done,
                                              now=now, event=event)
        if written is None:
            raise StaleWriteError(f"{REVIEW_NAMESPACE}/{key}", row.version, None)
        return written
