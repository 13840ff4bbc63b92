"""Re-executing runs against their journals, in a scratch store that nothing real touches.

Two paths. Deterministic replay takes the verify-only fast path first (``_fast``): the
code runs against its journal in memory, re-verifying every recorded proposal; a run it
cannot decide alone, or that departs from its journal, goes to the full engine, which
reports the first diverging step. Divergence replay (another model or prompt) and
``fast=False`` use the full engine only.

The full engine runs the code again from the top on a fresh store (``memory://`` by
default) and a virtual clock that starts when the first of the runs started. Every crossing
asks one proposer: the recorded model (deterministic replay) or the model under test
(divergence replay). Commits and effects go to a shadow ledger; ``ctx.step`` reads come from
the journal; run starts, inbox messages, human decisions and kill switches come back at
their recorded times.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from threshold.boundary import Prompt
from threshold.clock import VirtualClock, from_iso
from threshold.errors import NondeterminismError, UnknownAgentError
from threshold.replay._diff import CrossingComparison, RunDiff, diff_run
from threshold.replay._fast import Fallback, FastResult, definitions_for, verify_run
from threshold.replay._journal import RunJournal, load_journals
from threshold.replay._lean import LeanJournal, from_journal, load_lean
from threshold.replay._recorded import RECORDED, RecordedModel, ReplayRegistry
from threshold.replay._shadow import JournalActor, ShadowEffect, ShadowLedger, Unapplied
from threshold.runtime import Runtime
from threshold.store import TERMINAL_RUN_STATUSES, RunRecord, Store, open_store

Register = Callable[[Runtime], Any]
"""Defines the agents to replay on a runtime (the ``--agents module:function`` callable)."""


@dataclass(frozen=True, slots=True)
class ReplaySpec:
    """What to replay under. The default is deterministic replay: recorded proposals, the
    pinned agent versions."""

    model: str | None = None  # None: the recorded proposals
    prompts: Mapping[str, Prompt] = field(default_factory=dict)  # prompt id -> new version
    policy_version: str | None = None  # carried into the report; the policy is in the code
    agent_version: str | None = None  # replay under this definition instead of the pinned one
    sim_seed: int = 0
    model_options: Mapping[str, Any] = field(default_factory=dict)  # e.g. base_url
    # Deterministic replay also holds crossings to their recorded definitions (boundary and
    # verifier versions) and inputs. A migration does not: a finished crossing keeps its
    # journaled result under the new code, whatever version its verifiers have now.
    strict: bool = True

    @property
    def deterministic(self) -> bool:
        return self.model is None and not self.prompts


@dataclass(slots=True)
class ReplayOutcome:
    """One run replayed: both journals, what the shadow ledger saw, and their difference.

    ``path`` is ``"fast"`` when verify-only replay reproduced the run (its journals are then
    ``partial``: the run and its steps), ``"full"`` when the full engine replayed it;
    ``fallback`` says why a deterministic replay needed the full engine."""

    original: RunJournal
    replayed: RunJournal
    diff: RunDiff
    shadow: list[ShadowEffect]
    unapplied: list[Unapplied]
    path: str = "full"
    fallback: Fallback | None = None

    def nondeterminism(self) -> NondeterminismError | None:
        """The error a deterministic replay raises for this run, or None if it replayed clean."""
        first = self.diff.first
        if first is None:
            return None
        return NondeterminismError(self.diff.run_id, first.seq, first.replayed, first.recorded)


async def replay_journals(journals: Sequence[RunJournal], register: Register,
                          spec: ReplaySpec | None = None, *, scratch_url: str = "memory://",
                          fast: bool = True) -> list[ReplayOutcome]:
    """Replay ``journals``; see the module docstring. The full engine replays them together
    in one scratch store."""
    spec = spec or ReplaySpec()
    if not journals:
        return []
    if fast and spec.deterministic:
        by_id = {j.run_id: j for j in journals}
        leans = [from_journal(j) for j in journals]
        return await _fast_then_full(leans, register, spec, lambda ids: _full(
            [by_id[i] for i in ids], register, spec, scratch_url))
    return await _full(journals, register, spec, scratch_url)


async def _full(journals: Sequence[RunJournal], register: Register, spec: ReplaySpec,
                scratch_url: str) -> list[ReplayOutcome]:
    scratch = open_store(scratch_url)
    try:
        return await _replay(scratch, journals, register, spec)
    finally:
        await scratch.close()


async def _replay(scratch: Store, journals: Sequence[RunJournal], register: Register,
                  spec: ReplaySpec) -> list[ReplayOutcome]:
    recorded = RecordedModel(journals)
    registry = ReplayRegistry(recorded, spec.model, prompts=spec.prompts,
                              sim_seed=spec.sim_seed, options=dict(spec.model_options))
    start = min(from_iso(j.run.created_at) for j in journals)
    shadow = ShadowLedger(journals)
    runtime = Runtime(scratch, clock=VirtualClock(start), models=registry,
                      authorize=_already_authorized, shadow=shadow)
    register(runtime)
    runs = [(_scratch_run(runtime, journal.run, spec), journal) for journal in journals]
    actor = JournalActor(runtime, runs)
    runtime.actors.append(actor)
    await runtime.run_until_idle()
    replayed = {j.run_id: j for j in await load_journals(scratch, [j.run_id for j in journals])}
    unapplied = actor.unapplied
    return [ReplayOutcome(journal, replayed[journal.run_id],
                          diff_run(journal, replayed[journal.run_id],
                                   strict=spec.deterministic and spec.strict),
                          shadow.for_run(journal.run_id),
                          [u for u in unapplied if u.run_id == journal.run_id])
            for journal in journals]


def _already_authorized(principal: str, role: str) -> bool:
    # A recorded decision was authorized when it was made; replay only puts it back.
    return True


def _scratch_run(runtime: Runtime, run: RunRecord, spec: ReplaySpec) -> RunRecord:
    version = spec.agent_version or run.agent_version
    if runtime.definition(run.agent, version) is None:
        raise UnknownAgentError(run.agent, version)
    pins = {**run.pins, "agent_version": version, "model": spec.model or RECORDED}
    if spec.policy_version is not None:
        pins["policy"] = spec.policy_version
    # Built field by field: ``dataclasses.replace`` costs more than the rest of a fast replay
    # of a short run.
    return RunRecord(run_id=run.run_id, agent=run.agent, agent_version=version,
                     status="ready", input=run.input, seed=run.seed, pins=pins,
                     created_at=run.created_at, updated_at=run.created_at,
                     parent_run_id=run.parent_run_id)


async def replay_runs(store: Store, run_ids: Sequence[str] | None, register: Register,
                      spec: ReplaySpec | None = None, *, batch: int = 1000,
                      scratch_url: str = "memory://", fast: bool = True) -> list[ReplayOutcome]:
    """Load the journals of ``run_ids`` (every run when None) from ``store`` and replay them,
    ``batch`` runs per scratch store. The store itself is only read. With ``run_ids=None``,
    runs of agents that ``register`` does not define at all are left out.

    A deterministic ``spec`` takes the verify-only fast path unless ``fast=False``; runs it
    hands on are loaded whole and replayed by the full engine."""
    spec = spec or ReplaySpec()
    if fast and spec.deterministic:
        leans = await load_lean(store, run_ids)

        async def full(ids: list[str]) -> list[ReplayOutcome]:
            journals = await load_journals(store, ids)
            out: list[ReplayOutcome] = []
            for at in range(0, len(journals), max(batch, 1)):
                out += await _full(journals[at:at + batch], register, spec, scratch_url)
            return out

        return await _fast_then_full(leans, register, spec, full, known_only=run_ids is None)
    journals = await load_journals(store, run_ids)
    if run_ids is None:
        known = await _agent_names(register)
        journals = [j for j in journals if j.run.agent in known]
    outcomes: list[ReplayOutcome] = []
    for at in range(0, len(journals), max(batch, 1)):
        outcomes += await _full(journals[at:at + batch], register, spec, scratch_url)
    return outcomes


async def _fast_then_full(leans: Sequence[LeanJournal], register: Register, spec: ReplaySpec,
                          full: Callable[[list[str]], Awaitable[list[ReplayOutcome]]], *,
                          known_only: bool = False) -> list[ReplayOutcome]:
    """Verify every run on the fast path; replay the ones it hands on with ``full``.
    ``known_only``: leave out runs of agents that ``register`` does not define."""
    store = _ProbeStore()
    probe = Runtime(cast(Store, store))
    try:
        register(probe)
        if known_only:
            known = {d.name for d in probe.definitions()}
            leans = [lean for lean in leans if lean.run.agent in known]
        definitions = definitions_for(probe)
        runs = [_scratch_run(probe, lean.run, spec) for lean in leans]
        decided: dict[str, ReplayOutcome] = {}
        handed: dict[str, Fallback] = {}
        clean: dict[str, CrossingComparison] = {}
        for lean, run in zip(leans, runs, strict=True):
            verdict = await verify_run(lean, run, definitions)
            if isinstance(verdict, Fallback):
                handed[lean.run_id] = verdict
            else:
                decided[lean.run_id] = _fast_outcome(lean, verdict, clean)
    finally:
        await store.release()
    if handed:
        for outcome in await full(list(handed)):
            outcome.fallback = handed[outcome.original.run_id]
            decided[outcome.original.run_id] = outcome
    return [decided[lean.run_id] for lean in leans]


def _fast_outcome(lean: LeanJournal, result: FastResult,
                  clean: dict[str, CrossingComparison]) -> ReplayOutcome:
    """``clean``: one comparison per boundary name, shared (it is frozen) by every run."""
    original = lean.to_journal()
    replayed = RunJournal(result.replayed, dict(lean.steps), partial=True)
    comparisons = []
    for name in result.crossings:
        same = clean.get(name)
        if same is None:
            same = clean[name] = CrossingComparison(name, None)
        comparisons.append(same)
    diff = RunDiff(lean.run_id, lean.run.agent, crossings=comparisons,
                   compared_steps=result.compared_steps,
                   prefix_only=lean.run.status not in TERMINAL_RUN_STATUSES)
    return ReplayOutcome(original, replayed, diff, result.shadow, [], path="fast")


async def _agent_names(register: Register) -> set[str]:
    store = _ProbeStore()
    probe = Runtime(cast(Store, store))
    try:
        register(probe)
    finally:
        await store.release()
    return {d.name for d in probe.definitions()}


class _ProbeStore:
    """The store of a runtime that only collects agent definitions: an in-memory one, opened
    the first time anything uses it. Defining agents does not, and creating its schema costs
    about as much as a fast replay of ten runs."""

    def __init__(self) -> None:
        self._store: Store | None = None

    def __getattr__(self, name: str) -> Any:
        if self._store is None:
            self._store = open_store("memory://")
        return getattr(self._store, name)

    async def release(self) -> None:
        if self._store is not None:
            await self._store.close()


async def check_deterministic(store: Store, run_ids: Sequence[str] | None,
                              register: Register, *, agent_version: str | None = None,
                              batch: int = 1000, fast: bool = True,
                              strict: bool = True) -> list[ReplayOutcome]:
    """Deterministic replay: raise ``NondeterminismError`` naming the first diverging step
    of the first run that does not reproduce its verdicts, commits and states (and, when
    ``strict``, its crossings' definitions and inputs)."""
    outcomes = await replay_runs(store, run_ids, register,
                                 ReplaySpec(agent_version=agent_version, strict=strict),
                                 batch=batch, fast=fast)
    for outcome in outcomes:
        error = outcome.nondeterminism()
        if error is not None:
            raise error
    return outcomes
