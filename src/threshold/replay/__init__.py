"""Replay: deterministic replay of journals, divergence replay under another model, prompt
or policy, version pinning and migration, and the spine ablation.

- ``check_deterministic(store, run_ids, register)`` re-executes runs against their journals
  and raises ``NondeterminismError`` at the first step whose verdicts, commits or state
  differ. It first takes the verify-only fast path: the code runs against the journal in
  memory, every recorded proposal re-parsed and re-verified, effects not performed. A run
  that departs from its journal, or that the fast path cannot decide alone (human
  decisions, ``ctx.runtime``, guarded timers, ...), is replayed by the full engine: the
  recorded proposals (``RecordedModel``, spec ``recorded``) in a scratch store, effects in
  a shadow ledger; that engine names the first diverging step. ``fast=False`` uses the full
  engine only; ``ReplayOutcome.path`` and ``.fallback`` say which path decided a run.
- ``divergence_replay(store, run_ids, register, ReplaySpec(model="sim:v2"))`` re-proposes
  the recorded inputs under another model, prompt or policy and reports, per run and in
  aggregate, what diverged, what the verifiers absorbed and what would change commits.
- ``stranded_runs`` and ``migrate_run`` report and move runs whose pins no deployment
  serves; ``spine_ablation`` is the P3-vs-P5 experiment.
"""

from threshold.replay._ablation import AblationConfig, bootstrap_ci, spine_ablation
from threshold.replay._agents import DEFAULT_AGENTS, agents_register, prompt_variants
from threshold.replay._diff import RunDiff, StepDiff
from threshold.replay._engine import (
    Register,
    ReplayOutcome,
    ReplaySpec,
    check_deterministic,
    replay_journals,
    replay_runs,
)
from threshold.replay._export import (
    dump_journals,
    export_journals,
    import_journals,
    parse_journals,
    read_journals,
)
from threshold.replay._fast import Fallback
from threshold.replay._journal import CrossingJournal, RunJournal, load_journal, load_journals
from threshold.replay._pinning import (
    Migration,
    StrandedRun,
    migrate_run,
    prompt_pins,
    run_pins,
    stranded_runs,
)
from threshold.replay._recorded import (
    RECORDED,
    PromptOverride,
    ProposalNotRecorded,
    RecordedModel,
    ReplayRegistry,
)
from threshold.replay._report import (
    DivergenceReport,
    Tally,
    divergence_replay,
    divergence_report,
    render_report,
)
from threshold.replay._shadow import JournalActor, ShadowEffect, ShadowLedger

__all__ = [
    "DEFAULT_AGENTS",
    "RECORDED",
    "AblationConfig",
    "CrossingJournal",
    "DivergenceReport",
    "Fallback",
    "JournalActor",
    "Migration",
    "PromptOverride",
    "ProposalNotRecorded",
    "RecordedModel",
    "Register",
    "ReplayOutcome",
    "ReplayRegistry",
    "ReplaySpec",
    "RunDiff",
    "RunJournal",
    "ShadowEffect",
    "ShadowLedger",
    "StepDiff",
    "StrandedRun",
    "Tally",
    "agents_register",
    "bootstrap_ci",
    "check_deterministic",
    "divergence_replay",
    "divergence_report",
    "dump_journals",
    "export_journals",
    "import_journals",
    "load_journal",
    "load_journals",
    "migrate_run",
    "parse_journals",
    "prompt_pins",
    "prompt_variants",
    "read_journals",
    "render_report",
    "replay_journals",
    "replay_runs",
    "run_pins",
    "spine_ablation",
    "stranded_runs",
]
