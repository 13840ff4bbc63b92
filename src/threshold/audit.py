"""The auditor's question, answered from the journal alone: did every commit have its accepts?

A commit counts when every verifier the boundary declared accepted the exact proposal hash
committed, or when the boundary's human plane accepted that hash (a principal's approval,
or the declared SLA fallback); the latter are also counted apart as overrides.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from threshold.runtime import HUMAN_VERIFIER
from threshold.store import Store


@dataclass(frozen=True, slots=True)
class AuditReport:
    crossings: int
    commits: int
    commits_with_accept: int
    commits_by_override: int
    proposals: int
    rejects_by_code: dict[str, int]
    transport_errors_by_kind: dict[str, int]
    escalations: int
    outcomes: dict[str, int]
    effects_done: int
    effects_pending: int
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.commits == self.commits_with_accept and not self.violations

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


async def audit(store: Store, *, run_id: str | None = None) -> AuditReport:
    crossings = await store.list_crossings(run_id)
    verdicts = await store.list_verdicts(run_id)
    attempts = await store.list_attempts(run_id)
    effects = await store.list_effects(run_id)
    approvals = await store.list_approvals(run_id=run_id)

    accepted: dict[tuple[str, str], set[str]] = defaultdict(set)
    rejects: Counter[str] = Counter()
    for v in verdicts:
        if v.verdict == "accept":
            accepted[(v.crossing_id, v.proposal_hash)].add(v.verifier)
        else:
            rejects[v.code or "?"] += 1
    transport = Counter(a.error_kind or "?" for a in attempts if a.kind == "transport_error")

    commits = with_accept = overrides = 0
    violations: list[str] = []
    for c in crossings:
        if c.status != "committed":
            continue
        commits += 1
        got = accepted.get((c.crossing_id, c.committed_hash or ""), set())
        required = {name for name, _ in c.verifiers}
        if required <= got:
            with_accept += 1
        elif HUMAN_VERIFIER in got:
            with_accept += 1
            overrides += 1
        else:
            violations.append(f"{c.crossing_id}: committed {c.committed_hash} without accepts "
                              f"from {sorted(required - got)}")
    committed_ids = {c.crossing_id for c in crossings if c.status == "committed"}
    for e in effects:
        if e.crossing_id is not None and e.status == "done" and e.crossing_id not in \
                committed_ids:
            violations.append(f"effect {e.key} done but crossing {e.crossing_id} not committed")
    return AuditReport(
        crossings=len(crossings), commits=commits, commits_with_accept=with_accept,
        commits_by_override=overrides,
        proposals=sum(1 for a in attempts if a.kind == "proposal"),
        rejects_by_code=dict(sorted(rejects.items())),
        transport_errors_by_kind=dict(sorted(transport.items())),
        escalations=len(approvals),
        outcomes=dict(sorted(Counter(c.status for c in crossings).items())),
        effects_done=sum(1 for e in effects if e.status == "done"),
        effects_pending=sum(1 for e in effects if e.status == "intent"),
        violations=violations,
    )
