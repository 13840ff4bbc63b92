"""Step-by-step comparison of a run's journal with its replay.

Each journal position becomes a ``StepView`` (for a crossing: its attempts, verdicts and
outcome); two views differ in named aspects: ``path`` (another operation at this position),
``proposal``, ``verdicts``, ``commit`` (outcome, committed proposal hash or value) and
``result`` (anything else the step returned: a timer's fired/lapsed, an event's data, an
effect's result). Deterministic replay compares strictly: a crossing also differs in
``definition`` (boundary version, action, verifier names and versions) and ``inputs`` (the
digest of what it was asked with), since a recorded proposal answers those and no others.
A difference is ``absorbed`` when the committed outcome is unchanged, ``changed`` when a
commit or a state transition moved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from threshold.replay._journal import CrossingJournal, RunJournal
from threshold.store import TERMINAL_RUN_STATUSES

Category = Literal["absorbed", "changed"]
FINAL = "final"


@dataclass(frozen=True, slots=True)
class AttemptView:
    attempt: int
    kind: str
    proposal_hash: str | None
    error_kind: str | None
    verdicts: tuple[tuple[str, str, str | None], ...]  # (verifier, accept|reject, code)
    input_digest: str | None = None

    @property
    def rejected(self) -> bool:
        return any(v[1] == "reject" for v in self.verdicts)

    def summary(self) -> str:
        if self.kind == "transport_error":
            return f"#{self.attempt} transport {self.error_kind}"
        rejects = [f"{name}:{code}" for name, verdict, code in self.verdicts
                   if verdict == "reject"]
        return f"#{self.attempt} {(self.proposal_hash or '')[:10]} " + (
            f"rejected {','.join(rejects)}" if rejects else "accepted")


@dataclass(frozen=True, slots=True)
class StepView:
    """One journal position. ``finished`` is False for a crossing still open or escalated."""

    seq: int
    kind: str
    name: str
    result: Any
    attempts: tuple[AttemptView, ...] = ()
    finished: bool = True
    definition: tuple[Any, ...] | None = None  # a crossing's (version, action, verifiers)

    @property
    def commit(self) -> tuple[Any, ...]:
        r = self.result if isinstance(self.result, dict) else {}
        return r.get("outcome"), r.get("proposal_hash"), r.get("value")

    def summary(self) -> str:
        head = f"{self.kind}:{self.name}"
        if self.kind != "cross":
            return f"{head} -> {_short(self.result)}"
        if not self.finished:
            return f"{head} {self.result.get('status')} after " + "; ".join(
                a.summary() for a in self.attempts)
        outcome, phash, _ = self.commit
        by = self.result.get("decided_by")
        return (f"{head} {outcome}{f' {str(phash)[:10]}' if phash else ''}"
                f"{f' by {by}' if by else ''} [" + "; ".join(a.summary() for a in self.attempts)
                + "]")


@dataclass(frozen=True, slots=True)
class StepDiff:
    """How one journal position differs between the journal and its replay."""

    seq: int
    kind: str
    name: str
    aspects: tuple[str, ...]
    category: Category
    absorbed_by: str | None  # "verifiers" (a reject, then the retry converged) | "same_outcome"
    replayed: str
    recorded: str

    @property
    def boundary(self) -> str | None:
        return self.name if self.kind == "cross" else None

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "name": self.name,
                "aspects": list(self.aspects), "category": self.category,
                "absorbed_by": self.absorbed_by, "replayed": self.replayed,
                "recorded": self.recorded}


@dataclass(frozen=True, slots=True)
class CrossingComparison:
    """One crossing compared at an aligned position (same boundary, same place)."""

    boundary: str
    diff: StepDiff | None


@dataclass(slots=True)
class RunDiff:
    run_id: str
    agent: str
    diffs: list[StepDiff] = field(default_factory=list)
    crossings: list[CrossingComparison] = field(default_factory=list)
    compared_steps: int = 0
    prefix_only: bool = False  # the original is still in flight: only its journal is compared

    @property
    def first(self) -> StepDiff | None:
        return self.diffs[0] if self.diffs else None

    @property
    def classification(self) -> Literal["identical", "absorbed", "changed"]:
        if not self.diffs:
            return "identical"
        return "changed" if any(d.category == "changed" for d in self.diffs) else "absorbed"


def step_views(journal: RunJournal) -> dict[int, StepView]:
    views: dict[int, StepView] = {}
    for seq, step in journal.steps.items():
        crossing = journal.crossings.get(seq) if step.kind == "cross" else None
        views[seq] = StepView(seq, step.kind, step.name, _cross_result(step.result)
                              if step.kind == "cross" else step.result,
                              _attempt_views(crossing) if crossing else (),
                              definition=_definition(crossing) if crossing else None)
    for seq, crossing in journal.crossings.items():
        if seq not in views:
            views[seq] = StepView(seq, "cross", crossing.crossing.boundary,
                                  {"status": crossing.crossing.status},
                                  _attempt_views(crossing), finished=False,
                                  definition=_definition(crossing))
    return views


def _definition(crossing: CrossingJournal) -> tuple[Any, ...]:
    c = crossing.crossing
    return c.boundary_version, c.action, tuple(tuple(v) for v in c.verifiers)


def _cross_result(result: Any) -> Any:
    # The crossing id repeats the position; the effect result comes from the shadow ledger.
    if not isinstance(result, dict):
        return result
    return {k: v for k, v in result.items() if k not in ("crossing_id",)}


def _attempt_views(crossing: CrossingJournal) -> tuple[AttemptView, ...]:
    by_attempt: dict[int, list[tuple[str, str, str | None]]] = {}
    for v in crossing.verdicts:
        by_attempt.setdefault(v.attempt, []).append((v.verifier, v.verdict, v.code))
    return tuple(AttemptView(a.attempt, a.kind, a.proposal_hash, a.error_kind,
                             tuple(sorted(by_attempt.get(a.attempt, []))),
                             (a.provenance or {}).get("input_digest"))
                 for a in crossing.attempts)


def diff_run(original: RunJournal, replayed: RunJournal, *, strict: bool = False) -> RunDiff:
    """Compare every position of ``original`` with ``replayed``; a run still in flight is
    compared only as far as its journal goes. ``strict``: deterministic replay's comparison
    (crossing definitions and inputs too)."""
    prefix_only = original.run.status not in TERMINAL_RUN_STATUSES
    result = RunDiff(original.run_id, original.run.agent, prefix_only=prefix_only)
    ours, theirs = step_views(original), step_views(replayed)
    last = original.last_seq
    aligned = True
    for seq in sorted(set(ours) | set(theirs)):
        if prefix_only and seq > last:
            break
        o, r = ours.get(seq), theirs.get(seq)
        result.compared_steps += 1
        if o is None or r is None or (o.kind, o.name) != (r.kind, r.name):
            aligned = False
            known = o if o is not None else r
            assert known is not None  # seq came from one of the two
            result.diffs.append(StepDiff(seq, known.kind, known.name, ("path",), "changed",
                                         None, _summary(r), _summary(o)))
            continue
        diff = _compare_cross(o, r, strict) if o.kind == "cross" else _compare_plain(o, r)
        if o.kind == "cross" and aligned:
            result.crossings.append(CrossingComparison(o.name, diff))
        if diff is not None:
            result.diffs.append(diff)
    if not prefix_only:
        final = _compare_final(original, replayed, last + 1)
        if final is not None:
            result.diffs.append(final)
    return result


def _summary(view: StepView | None) -> str:
    return "nothing" if view is None else view.summary()


def _compare_plain(o: StepView, r: StepView) -> StepDiff | None:
    if o.result == r.result:
        return None
    return StepDiff(o.seq, o.kind, o.name, ("result",), "changed", None, r.summary(),
                    o.summary())


def _compare_cross(o: StepView, r: StepView, strict: bool = False) -> StepDiff | None:
    replay_attempts = r.attempts
    if not o.finished:  # in flight: compare what the journal has so far
        replay_attempts = r.attempts[:len(o.attempts)]
    aspects = []
    if strict and o.definition != r.definition:
        aspects.append("definition")
    if strict and [a.input_digest for a in o.attempts] != \
            [a.input_digest for a in replay_attempts]:
        aspects.append("inputs")
    if [(a.kind, a.proposal_hash, a.error_kind) for a in o.attempts] != \
            [(a.kind, a.proposal_hash, a.error_kind) for a in replay_attempts]:
        aspects.append("proposal")
    if [a.verdicts for a in o.attempts] != [a.verdicts for a in replay_attempts]:
        aspects.append("verdicts")
    if o.finished and o.commit != r.commit:
        aspects.append("commit")
    elif o.finished and o.result != r.result:
        aspects.append("result")
    if not aspects:
        return None
    replayed, recorded = r.summary() + _strict(r, aspects), o.summary() + _strict(o, aspects)
    if "commit" in aspects:
        return StepDiff(o.seq, o.kind, o.name, tuple(aspects), "changed", None, replayed,
                        recorded)
    new_rejects = {a for a in r.attempts if a.rejected} - set(o.attempts)
    return StepDiff(o.seq, o.kind, o.name, tuple(aspects), "absorbed",
                    "verifiers" if new_rejects else "same_outcome", replayed, recorded)


def _strict(view: StepView, aspects: list[str]) -> str:
    """What a strict-only difference was about: the summaries do not show it."""
    parts = []
    if "definition" in aspects and view.definition is not None:
        version, action, verifiers = view.definition
        parts.append(f"boundary v{version} action {action} verifiers "
                     + ",".join(f"{name}@{v}" for name, v in verifiers))
    if "inputs" in aspects:
        digests = sorted({a.input_digest for a in view.attempts if a.input_digest})
        parts.append(f"inputs {','.join(digests) or 'none'}")
    return f" ({'; '.join(parts)})" if parts else ""


def _compare_final(original: RunJournal, replayed: RunJournal, seq: int) -> StepDiff | None:
    o, r = original.run, replayed.run
    theirs = {"status": r.status, "result": r.result, "error": r.error}
    ours = {"status": o.status, "result": o.result, "error": o.error}
    if ours == theirs:
        return None
    aspects = tuple(k for k in ("status", "result", "error") if ours[k] != theirs[k])
    return StepDiff(seq, "run", FINAL, aspects, "changed", None,
                    f"run {r.status} -> {_short(r.result if r.status != 'failed' else r.error)}",
                    f"run {o.status} -> {_short(o.result if o.status != 'failed' else o.error)}")


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
