"""Failure signatures of the boundary itself (the SDB): rejects taken for successes, retry
loops, exhausted budgets, duplicate effects, commits without accepts.

Each detector reads a ``Journal`` and returns findings; none writes anything.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from threshold.methodology._findings import (
    Evidence,
    Finding,
    Journal,
    Text,
    Thresholds,
    found,
    make_finding,
    seconds_between,
)
from threshold.runtime import HUMAN_VERIFIER
from threshold.store import AttemptRecord, CrossingRecord, VerdictRecord

Detector = Callable[[Journal, Thresholds], list[Finding]]

NOT_COMMITTED = frozenset({"aborted", "denied", "failed"})
# A result that says one of these claims the action happened.
SUCCESS_KEYS = frozenset({"success", "succeeded", "sent", "committed", "delivered"})
SUCCESS_WORDS = frozenset({"success", "succeeded", "sent", "committed", "delivered"})
STATUS_KEYS = frozenset({"status", "outcome", "result", "state"})
BUDGET_REASON = "retry budget exhausted"


def _rejects_by_attempt(verdicts: list[VerdictRecord]) -> dict[tuple[str, int], list[str]]:
    out: dict[tuple[str, int], list[str]] = defaultdict(list)
    for v in verdicts:
        if v.verdict == "reject" and v.verifier != HUMAN_VERIFIER:
            out[(v.crossing_id, v.attempt)].append(v.code or "?")
    return out


def last_codes(journal: Journal) -> dict[str, list[str]]:
    """The reject codes of each crossing's last attempt."""
    by_attempt = _rejects_by_attempt(journal.verdicts)
    return {c.crossing_id: sorted(by_attempt.get((c.crossing_id, c.attempts), []))
            for c in journal.crossings}


# --- a reject reported as success -----------------------------------------------------


def _walk(value: Any, depth: int = 0) -> Iterator[dict[str, Any]]:
    if depth > 6:
        return
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _walk(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, depth + 1)


def claims_success(value: Any) -> bool:
    """Does a run result say the action happened (``sent: true``, ``status: "sent"``)?"""
    for node in _walk(value):
        if "crossing_id" in node:
            continue  # a crossing's own record: checked against the store, not by words
        for key, item in node.items():
            name = str(key).lower()
            if name in SUCCESS_KEYS and item is True:
                return True
            if name in STATUS_KEYS and isinstance(item, str) and item.lower() in SUCCESS_WORDS:
                return True
    return False


def reject_reported_as_success(journal: Journal, _: Thresholds) -> list[Finding]:
    crossings = journal.crossings_by_id()
    items: list[Evidence] = []
    # 1. A result (of the run or of a step) that carries a crossing as committed.
    results = [(r.run_id, r.updated_at, r.result) for r in journal.runs]
    results += [(run_id, s.at, s.result) for run_id, steps in journal.steps.items()
                for s in steps.values() if s.kind != "cross"]
    for run_id, at, result in results:
        for node in _walk(result):
            cid = node.get("crossing_id")
            stored = crossings.get(cid) if isinstance(cid, str) else None
            claimed = node.get("outcome") == "committed" or node.get("committed") is True
            if stored is not None and claimed and stored.status != "committed":
                items.append(Evidence(at, run_id, f"{run_id} reports crossing {cid} as "
                                      f"committed; it was {stored.status}", cid))
    # 2. A completed run claiming success while its last action was refused (and no later
    # crossing of that boundary made it good).
    by_run: dict[str, list[CrossingRecord]] = defaultdict(list)
    for c in journal.crossings:
        by_run[c.run_id].append(c)
    for run in journal.runs:
        if run.status != "completed" or not claims_success(run.result):
            continue
        for c in _unredeemed(by_run[run.run_id]):
            items.append(Evidence(c.ended_at or run.updated_at, run.run_id,
                                  f"{run.run_id} completed claiming success; its {c.boundary} "
                                  f"crossing was {c.status}: {c.reason or ''}".rstrip(": "),
                                  c.crossing_id))
    # 3. An effect performed for a crossing that did not commit.
    for e in journal.effects:
        owner = crossings.get(e.crossing_id or "")
        if owner is not None and e.performed > 0 and owner.status != "committed":
            items.append(Evidence(e.done_at or e.intent_at, e.run_id,
                                  f"effect {e.key} performed for {owner.status} crossing",
                                  owner.crossing_id))
    # 4. A plain effect doing a boundary's action after that boundary refused.
    for e in journal.effects:
        if e.crossing_id is not None or e.performed == 0:
            continue
        same = [c for c in by_run[e.run_id] if e.action in (c.action, c.boundary)]
        refused = [c for c in same if c.status in NOT_COMMITTED
                   and (c.ended_at or "") <= e.intent_at]
        if refused and not any(c.status == "committed" for c in same):
            last = refused[-1]
            items.append(Evidence(e.done_at or e.intent_at, e.run_id,
                                  f"effect {e.action} ({e.key}) performed although "
                                  f"{last.crossing_id} was {last.status}", last.crossing_id))
    return found(make_finding(
        "reject_reported_as_success", "SDB", "high", "runs", items, Text(
            "a rejected, denied or failed crossing was treated as done",
            "agent code used the crossing's result without checking `crossing.committed`, "
            "or performed the boundary's action outside it",
            "branch on `crossing.committed`; perform side effects only in the boundary's "
            "commit, and report the outcome and reason of every uncommitted crossing")))


def _unredeemed(crossings: list[CrossingRecord]) -> list[CrossingRecord]:
    """The run's last crossing if it ended uncommitted: the run's last word on an action
    was a refusal."""
    ordered = sorted(crossings, key=lambda c: c.seq)
    if not ordered or ordered[-1].status not in NOT_COMMITTED:
        return []
    return ordered[-1:]


# --- retries ------------------------------------------------------------------------------


def _longest_run(values: list[Any]) -> tuple[int, Any]:
    best, best_value, current = 0, None, 0
    for i, v in enumerate(values):
        current = current + 1 if i and v == values[i - 1] else 1
        if current > best:
            best, best_value = current, v
    return best, best_value


def retry_loop(journal: Journal, th: Thresholds) -> list[Finding]:
    crossings = journal.crossings_by_id()
    codes = _rejects_by_attempt(journal.verdicts)
    attempts: dict[str, list[AttemptRecord]] = defaultdict(list)
    for a in journal.attempts:
        if a.kind == "proposal":
            attempts[a.crossing_id].append(a)
    per_boundary: dict[str, list[Evidence]] = defaultdict(list)
    for cid, rows in attempts.items():
        rows.sort(key=lambda a: a.attempt)
        crossing = crossings.get(cid)
        if crossing is None:
            continue
        hashes = [a.proposal_hash for a in rows]
        rejected = [tuple(sorted(codes.get((cid, a.attempt), []))) for a in rows]
        same_hash, _ = _longest_run(hashes)
        same_code, code = _longest_run(rejected)
        if same_hash >= th.repeat_hash:
            per_boundary[crossing.boundary].append(Evidence(
                rows[0].at, crossing.run_id, f"{cid}: {same_hash} consecutive attempts "
                f"proposed the same thing ({(hashes[0] or '')[:12]})", cid))
        elif same_code >= th.repeat_code and code:
            per_boundary[crossing.boundary].append(Evidence(
                rows[0].at, crossing.run_id, f"{cid}: {same_code} consecutive attempts "
                f"rejected with {', '.join(code)}", cid))
    last = last_codes(journal)
    by_run: dict[str, list[CrossingRecord]] = defaultdict(list)
    for c in journal.crossings:
        by_run[c.run_id].append(c)
    for run_id, run_crossings in by_run.items():
        run_crossings.sort(key=lambda c: c.seq)
        keys = [(c.boundary, tuple(last[c.crossing_id])) if c.status in NOT_COMMITTED
                else None for c in run_crossings]
        length, key = _longest_run(keys)
        if key is not None and length >= th.repeat_crossings:
            boundary, code = key
            per_boundary[boundary].append(Evidence(
                run_crossings[0].started_at, run_id, f"{run_id}: {length} consecutive {boundary} "
                f"crossings ended uncommitted with {', '.join(code) or 'no verdict'}"))
    return found(*(make_finding(
        "retry_loop", "SDB", "medium", boundary, items, Text(
            f"retries of {boundary} made no progress",
            "the feedback does not change what the model proposes (same proposal, or the same "
            "reject again), so retries spend budget and latency for nothing",
            "improve the reject's hint, route that code to Escalate or Abort in "
            "RejectPolicy.routes, or lower max_attempts for it"))
        for boundary, items in sorted(per_boundary.items())))


def budget_exhausted(journal: Journal, _: Thresholds) -> list[Finding]:
    retry: dict[str, list[Evidence]] = defaultdict(list)
    transport: dict[str, list[Evidence]] = defaultdict(list)
    for c in journal.crossings:
        reason = c.reason or ""
        at = c.ended_at or c.started_at
        if c.status == "aborted" and reason.startswith(BUDGET_REASON):
            retry[c.boundary].append(Evidence(at, c.run_id, f"{c.crossing_id} aborted after "
                                              f"{c.attempts} attempts", c.crossing_id))
        elif c.status == "failed" and reason.startswith("transport:"):
            transport[c.boundary].append(Evidence(at, c.run_id, f"{c.crossing_id}: {reason}",
                                                  c.crossing_id))
    out = [make_finding("budget_exhausted", "SDB", "medium", b, items, Text(
        f"crossings of {b} aborted with the retry budget exhausted",
        "every attempt was rejected; the model cannot meet the verifiers with the feedback "
        "given, or the budget is too small for the error rate",
        "read the reject codes of the last attempts; fix the prompt or hints, or escalate "
        "instead of aborting (RejectPolicy(exhausted=Escalate(...)))"))
        for b, items in sorted(retry.items())]
    out += [make_finding("budget_exhausted", "SDB", "medium", f"{b} (transport)", items, Text(
        f"crossings of {b} failed after exhausting transport retries",
        "the model endpoint timed out, rate-limited or errored on every try",
        "check the provider; raise TransportPolicy.max_retries or backoff, or route "
        "TransportPolicy.exhausted to Escalate"))
        for b, items in sorted(transport.items())]
    return found(*out)


# --- effects ------------------------------------------------------------------------------


def duplicate_effects(journal: Journal, th: Thresholds) -> list[Finding]:
    plain: list[Evidence] = []
    saga: list[Evidence] = []
    gap = th.effect_gap.total_seconds()
    for e in journal.effects:
        target = saga if e.action.startswith("saga:") else plain
        if e.performed > 1:
            target.append(Evidence(e.done_at or e.intent_at, e.run_id, f"effect {e.action} "
                                   f"({e.key}) performed {e.performed} times", e.crossing_id))
        elif e.done_at is not None and seconds_between(e.intent_at, e.done_at) > gap:
            # The worker stopped between the intent and the result: the crash window. The
            # effect ran again on resume with the same key; whether it ran before, only the
            # receiver knows.
            waited = seconds_between(e.intent_at, e.done_at) / 60
            target.append(Evidence(e.intent_at, e.run_id, f"effect {e.action} ({e.key}) "
                                   f"completed {waited:.0f} min after its intent: resumed "
                                   f"after an interruption, possibly performed twice",
                                   e.crossing_id))
    sent: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for e in journal.effects:
        if e.proposal_hash and e.status == "done":
            sent[(e.run_id, e.action, e.proposal_hash)].append(e.done_at or e.intent_at)
    plain += [Evidence(min(times), run_id, f"{action} sent {len(times)} times under different "
                       f"keys for one proposal ({phash[:12]})")
              for (run_id, action, phash), times in sent.items() if len(times) > 1]
    return found(
        make_finding("duplicate_effect", "SDB", "high", "effects", plain, Text(
            "an effect was attempted more than once",
            "a crash after the effect ran and before its result was recorded (the one window "
            "no local record closes), a failed attempt retried, or the same action re-sent "
            "under a new key",
            "make the receiving system dedupe on EffectContext.key; never mint a new key "
            "for a retry of the same action")),
        make_finding("duplicate_effect", "P2", "medium", "saga effects", saga, Text(
            "a saga step or compensation reached its target more than once",
            "a compensation retried after failures, or a crash between performing a saga "
            "effect and recording it",
            "make saga actions and compensations idempotent on their key")))


# --- the SDB audit ------------------------------------------------------------------------


def commit_without_accept(journal: Journal, _: Thresholds) -> list[Finding]:
    crossings = journal.crossings_by_id()
    items = []
    for violation in journal.audit.violations:
        if violation.startswith("effect "):
            continue  # an effect for an uncommitted crossing: reported as reject-as-success
        cid = violation.partition(": committed ")[0]
        c = crossings.get(cid)
        items.append(Evidence(c.ended_at or c.started_at if c else journal.now,
                              c.run_id if c else None, violation, cid))
    return found(make_finding(
        "commit_without_accept", "SDB", "high", "audit", items, Text(
            "a commit has no recorded accept from every verifier for the hash committed",
            "the journal was altered, or a commit path bypassed the crossing engine",
            "treat as an incident: compare with backups, find the writer; commit only "
            "through ctx.cross")))
