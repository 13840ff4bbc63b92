"""The auditor's question, answered from the journal alone: did every commit have its accepts?

A commit counts when every verifier the boundary declared accepted the exact proposal hash
committed, or when the boundary's human plane accepted that hash (a principal's approval,
or the declared SLA fallback); the latter are also counted apart as overrides.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from threshold._json import loads
from threshold.runtime import HUMAN_VERIFIER
from threshold.store import AuditRows, Store


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
    narrow = getattr(store, "audit_rows", None)
    rows: AuditRows = await narrow(run_id) if narrow is not None else await _rows(store, run_id)

    accepted: dict[tuple[str, str], set[str]] = defaultdict(set)
    rejects: Counter[str] = Counter()
    for crossing_id, proposal_hash, verifier, verdict, code in rows.verdicts:
        if verdict == "accept":
            accepted[(crossing_id, proposal_hash)].add(verifier)
        else:
            rejects[code or "?"] += 1
    transport = Counter(error_kind or "?" for kind, error_kind in rows.attempts
                        if kind == "transport_error")

    commits = with_accept = overrides = 0
    violations: list[str] = []
    required_by_text: dict[str, frozenset[str]] = {}  # a few boundaries, many crossings
    committed_ids = set()
    for crossing_id, status, committed_hash, verifiers in rows.crossings:
        if status != "committed":
            continue
        commits += 1
        committed_ids.add(crossing_id)
        got = accepted.get((crossing_id, committed_hash or ""), set())
        required = _names(verifiers, required_by_text)
        if required <= got:
            with_accept += 1
        elif HUMAN_VERIFIER in got:
            with_accept += 1
            overrides += 1
        else:
            violations.append(f"{crossing_id}: committed {committed_hash} without accepts "
                              f"from {sorted(required - got)}")
    for key, crossing_id, status in rows.effects:
        if crossing_id is not None and status == "done" and crossing_id not in committed_ids:
            violations.append(f"effect {key} done but crossing {crossing_id} not committed")
    return AuditReport(
        crossings=len(rows.crossings), commits=commits, commits_with_accept=with_accept,
        commits_by_override=overrides,
        proposals=sum(1 for kind, _ in rows.attempts if kind == "proposal"),
        rejects_by_code=dict(sorted(rejects.items())),
        transport_errors_by_kind=dict(sorted(transport.items())),
        escalations=rows.approvals,
        outcomes=dict(sorted(Counter(c[1] for c in rows.crossings).items())),
        effects_done=sum(1 for e in rows.effects if e[2] == "done"),
        effects_pending=sum(1 for e in rows.effects if e[2] == "intent"),
        violations=violations,
    )


async def _rows(store: Store, run_id: str | None) -> AuditRows:
    """The audit's columns through the protocol, for a store without ``audit_rows``."""
    return AuditRows(
        [(c.crossing_id, c.status, c.committed_hash, c.verifiers)
         for c in await store.list_crossings(run_id)],
        [(v.crossing_id, v.proposal_hash, v.verifier, v.verdict, v.code)
         for v in await store.list_verdicts(run_id)],
        [(a.kind, a.error_kind) for a in await store.list_attempts(run_id)],
        [(e.key, e.crossing_id, e.status) for e in await store.list_effects(run_id)],
        len(await store.list_approvals(run_id=run_id)))


def _names(verifiers: Any, cache: dict[str, frozenset[str]]) -> frozenset[str]:
    """The verifier names of a crossing's ``[[name, version], ...]``, stored as JSON text
    by SQL stores' narrow reads."""
    if not isinstance(verifiers, str):
        return frozenset(name for name, _ in verifiers)
    names = cache.get(verifiers)
    if names is None:
        names = cache[verifiers] = frozenset(name for name, _ in loads(verifiers))
    return names
