"""Failure signatures of the patterns around the boundary: sagas, state rows, delegation,
fan-out, supervision, replay and topics. Each reads the journal events those modules write.

Event kinds matched here, by producer:

- ``threshold.patterns.saga``: ``saga.step``, ``saga.aborted``, ``saga.compensate``,
  ``saga.compensation_failed``, ``saga.compensated``.
- ``threshold.patterns.delegation``: ``delegation.conflict``, ``delegation.child``,
  ``delegation.failed``; ``threshold.patterns.scatter``: ``fanout.failed``;
  ``threshold.patterns.supervisor``: ``supervisor.escalated``.
- ``threshold.patterns.state_machine``: ``state.stale_write`` (a lost compare-and-swap);
  ``threshold.patterns.topics``: ``topic.late`` (journaled without a run id).
- the worker: ``run.nondeterminism`` (a run whose code left its journal) and ``run.error``
  (a run that failed, e.g. with ``StaleWriteError`` from code that does its own CAS).
- ``threshold.replay`` returns its divergence reports instead of storing them, so a
  journal shows divergence only as ``run.nondeterminism``; ``DIVERGENCE_KINDS`` is what a
  stored report should be journaled as.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from threshold.methodology._findings import (
    Evidence,
    Finding,
    Journal,
    Text,
    Thresholds,
    found,
    make_finding,
)
from threshold.store import TERMINAL_RUN_STATUSES, EventRecord

STALE_CAS_KINDS = frozenset({"state.stale_write"})
DIVERGENCE_KINDS = frozenset({"replay.divergence", "replay.diverged"})
LATE_EVENT_KINDS = frozenset({"topic.late"})
# Inbox channels that only wake a run (the decision lives elsewhere): never read by design.
WAKE_UP_CHANNELS = frozenset({"approval"})


# --- P2: sagas ----------------------------------------------------------------------------


def saga_signatures(journal: Journal, _: Thresholds) -> list[Finding]:
    failed: list[Evidence] = []
    disorder: list[Evidence] = []
    incomplete: list[Evidence] = []
    status = journal.run_status
    sagas: dict[tuple[str, str], list[EventRecord]] = defaultdict(list)
    for e in journal.events_with_prefix("saga."):
        sagas[(e.run_id or "", str(e.data.get("saga")))].append(e)
    for (run_id, saga), events in sorted(sagas.items()):
        events.sort(key=lambda e: (e.at, e.event_id or 0))
        for e in events:
            if e.kind == "saga.compensation_failed":
                failed.append(Evidence(e.at, run_id, f"{run_id} saga {saga}: compensation of "
                                       f"{e.data.get('step')} failed {e.data.get('attempts')} "
                                       f"times: {e.data.get('error')}"))
        order = _disorder(events)
        if order is not None:
            disorder.append(Evidence(order[0], run_id, f"{run_id} saga {saga}: compensated "
                                     f"{order[1]} before {order[2]} (committed later)"))
        kinds = {e.kind for e in events}
        if "saga.aborted" in kinds and "saga.compensated" not in kinds and \
                status.get(run_id) in TERMINAL_RUN_STATUSES:
            at = next(e.at for e in events if e.kind == "saga.aborted")
            incomplete.append(Evidence(at, run_id, f"{run_id} saga {saga} aborted and the run "
                                       f"ended {status.get(run_id)} before compensating"))
    return found(
        make_finding("compensation_failed", "P2", "high", "sagas", failed, Text(
            "a saga compensation failed after its retries and was escalated",
            "the undo action raised every time: the target refused, or the compensation is "
            "not valid for the state the step left",
            "fix the compensation, then resolve the waiting run on its channel "
            "({'action': 'retry' | 'resolved', 'by': ...})")),
        make_finding("compensation_out_of_order", "P2", "high", "sagas", disorder, Text(
            "saga steps were compensated out of reverse order",
            "compensations ran outside the saga (by hand or by other code), or the journal "
            "was rewritten",
            "compensate only through Saga.abort/compensate, which undoes newest first")),
        make_finding("compensation_incomplete", "P2", "high", "sagas", incomplete, Text(
            "a saga aborted but its compensation chain never finished",
            "the run ended (failed or killed) in the middle of compensating",
            "resume or restart the run so the chain completes; compensations are idempotent")))


def _disorder(events: list[EventRecord]) -> tuple[str, str, str] | None:
    """The first compensation done before that of a step committed after it, if any."""
    index = {str(e.data.get("step")): int(e.data.get("index") or 0) for e in events
             if e.kind == "saga.step" and e.data.get("status") == "done"}
    done = [e for e in events if e.kind == "saga.compensate" and e.data.get("status") == "ok"]
    for i, first in enumerate(done):
        for later in done[i + 1:]:
            a, b = str(first.data.get("step")), str(later.data.get("step"))
            if index.get(a, 0) < index.get(b, 0):
                return later.at, a, b
    return None


# --- P5: state rows -----------------------------------------------------------------------


def stale_cas(journal: Journal, _: Thresholds) -> list[Finding]:
    noted = [e for e in journal.events if e.kind in STALE_CAS_KINDS]
    # A run that lost a noted CAS and failed of it is one symptom, not two.
    noted_runs = {e.run_id for e in noted}
    failed = [e for e in journal.events if e.kind.startswith("run.")
              and e.data.get("type") == "StaleWriteError" and e.run_id not in noted_runs]
    items = [Evidence(e.at, e.run_id, f"{e.kind}: {_brief(e.data)}") for e in noted + failed]
    return found(make_finding(
        "stale_cas_write", "P5", "medium", "state rows", items, Text(
            "a compare-and-swap lost: a write was based on a version that had moved on",
            "two actors (runs, timers, humans) changed one state row concurrently, or a run "
            "acted on a state it read before a wait",
            "re-read the row and re-decide after a lost CAS (never retry the same write "
            "blindly), and guard timers with the version they were armed at")))


# --- P1: delegation; P2: fan-out; P4: supervision ----------------------------------------


def delegation_signatures(journal: Journal, _: Thresholds) -> list[Finding]:
    conflicts: list[Evidence] = []
    fields: Counter[str] = Counter()
    unaggregated: list[Evidence] = []
    for e in journal.events_with_prefix("delegation."):
        d = e.data
        who = f"{e.run_id} {d.get('orchestrator')}"
        if e.kind == "delegation.conflict":
            fields[str(d.get("field"))] += 1
            conflicts.append(Evidence(e.at, e.run_id, f"{who}: children disagree on "
                                      f"{d.get('field')}: {d.get('values')} -> "
                                      f"{d.get('winner')} by {d.get('rule')}"))
        elif e.kind == "delegation.child" and d.get("use") in ("dropped", "failed"):
            unaggregated.append(Evidence(e.at, e.run_id, f"{who}: child {d.get('child')} "
                                         f"{d.get('status')}, {d.get('use')}: "
                                         f"{d.get('reason')}", d.get("crossing_id")))
        elif e.kind == "delegation.failed":
            unaggregated.append(Evidence(e.at, e.run_id, f"{who}: delegation failed: "
                                         f"{d.get('reason')}"))
    return found(
        make_finding("subagent_conflict", "P1", "low", "delegation", conflicts, Text(
            "sub-agents proposed conflicting values that the merge had to arbitrate",
            "the children see different context or prompts, or their tasks overlap",
            "narrow each child's task to the fields it owns; check that field_priority "
            "names the child that should win"), counts=dict(fields.most_common())),
        make_finding("unaggregated_subagent_output", "P1", "medium", "delegation",
                     unaggregated, Text(
            "sub-agent results were dropped or could not be merged",
            "children timed out, were rejected, ran out of the parent's budget, or their "
            "merged fields did not make a valid result",
            "give children a Substitute default or more budget, raise their timeout, or "
            "make merge_into's fields optional where a partial result is acceptable")))


def fanout_and_supervision(journal: Journal, _: Thresholds) -> list[Finding]:
    gathers = [Evidence(e.at, e.run_id, f"{e.run_id} fan-out {e.data.get('fanout')} failed: "
                        f"{e.data.get('reason')}") for e in journal.events
               if e.kind == "fanout.failed"]
    restarts = [Evidence(e.at, e.run_id, f"{e.run_id} supervisor {e.data.get('supervisor')}: "
                         f"{e.data.get('reason')}") for e in journal.events
                if e.kind == "supervisor.escalated"]
    return found(
        make_finding("gather_failed", "P2", "medium", "fan-out", gathers, Text(
            "a fan-out gathered too few accepted proposals or found no quorum",
            "branches were rejected or timed out, or their proposals disagreed",
            "lower k or add branches, give the vote a fallback, or fix what the branches' "
            "verifiers reject")),
        make_finding("restart_limit", "P4", "high", "supervision", restarts, Text(
            "a supervised child failed more often than its restart intensity allows",
            "a persistent fault (bad input, a dependency down) that restarts cannot cure",
            "find the child's error in the journal; fix the input or dependency before "
            "letting it restart again")))


# --- P3: replay and topics ----------------------------------------------------------------


def divergence_and_lateness(journal: Journal, _: Thresholds) -> list[Finding]:
    """Replay divergence, late topic events, and inbox messages that came too late."""
    diverged = [Evidence(e.at, e.run_id, f"{e.run_id}: {e.data.get('error') or _brief(e.data)}")
                for e in journal.events
                if e.kind == "run.nondeterminism" or e.kind in DIVERGENCE_KINDS]
    late = [Evidence(e.at, e.run_id, f"{e.kind}: {_brief(e.data)}") for e in journal.events
            if e.kind in LATE_EVENT_KINDS]
    status = journal.run_status
    unread = [Evidence(m.received_at, m.run_id, f"{m.run_id} ended {status.get(m.run_id)} "
                       f"without reading {m.message_id} on {m.channel}")
              for m in journal.messages if m.consumed_seq is None
              and m.channel not in WAKE_UP_CHANNELS
              and status.get(m.run_id) in TERMINAL_RUN_STATUSES]
    return found(
        make_finding("unconsumed_message", "P3", "medium", "inbox", unread, Text(
            "messages reached runs that had stopped listening",
            "the run timed out or finished before the reply came: the sender is slower "
            "than the receive timeout, or the run no longer waits on that channel",
            "lengthen the receive timeout, or hand late replies to a follow-up run "
            "(a topic consumer, or start a run per message)")),
        make_finding("replay_divergence", "P3", "high", "replay", diverged, Text(
            "a run's code or model decided differently from its journal",
            "the agent code changed under in-flight runs, read the wall clock or global "
            "randomness, or a model or prompt change made consumers decide differently",
            "pin versions per run and deploy new code as a new version; use ctx.now() and "
            "ctx.random(); gate model upgrades on a divergence replay")),
        make_finding("late_event", "P3", "medium", "topics", late, Text(
            "events arrived after the point their consumers had already decided",
            "producers stamp event time late or publish out of order",
            "decide on event time with an allowed lateness, and replay late events through "
            "an idempotent consumer")))


def _brief(data: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v}" for k, v in sorted(data.items()))
    return text if len(text) <= 160 else text[:159] + "…"
