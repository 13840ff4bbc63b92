"""The paper's five-step pattern selection as a pure function of a workload.

1 classify the runtime class, 2 choose the state spine, 3 wrap with coordination, 4 bound with
control, 5 sequence the build. Every choice carries its reason; every LLM-to-action boundary is
inventoried, and a missing proposer, verifier, commit or reject signal is flagged as weak.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from threshold.methodology._workload import (
    BoundarySpec,
    Fallback,
    SideEffect,
    Workload,
    format_duration,
)

PatternId = Literal["P1", "P2", "P3", "P4", "P5", "P6"]
Concern = Literal["coordination", "state", "control"]
RuntimeClass = Literal["conversational", "autonomous", "long-horizon"]
Part = Literal["proposer", "verifier", "commit", "reject"]
Severity = Literal["high", "medium", "low"]
Role = Literal["spine", "support", "coordination", "control"]

PATTERNS: dict[PatternId, tuple[str, Concern]] = {
    "P1": ("hierarchical delegation", "coordination"),
    "P2": ("scatter-gather + saga", "coordination"),
    "P3": ("event-driven sequencing", "state"),
    "P4": ("supervisor + gate", "control"),
    "P5": ("shared state machine", "state"),
    "P6": ("human in the loop", "control"),
}

# Thresholds of the classification; named so a reviewer can argue with them.
CONVERSATIONAL_HORIZON = timedelta(minutes=2)
INTERACTIVE_LATENCY = timedelta(seconds=10)
LONG_HORIZON = timedelta(days=1)
SIGNIFICANT_DOLLARS = 1000.0
DEFAULT_SLA: dict[RuntimeClass, timedelta] = {
    "conversational": timedelta(minutes=2),
    "autonomous": timedelta(minutes=30),
    "long-horizon": timedelta(hours=24),
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PatternChoice(_Frozen):
    pattern: PatternId
    name: str
    concern: Concern
    role: Role
    reason: str


class StepOutcome(_Frozen):
    """One of the five steps: what it decided and why."""

    number: int
    title: str
    decision: str
    reasons: tuple[str, ...]


class Weakness(_Frozen):
    part: Part
    severity: Severity
    why: str


class BoundaryEntry(_Frozen):
    """One boundary of the inventory, with its effect resolved and its weaknesses named."""

    name: str
    proposer: str | None
    verifiers: tuple[str, ...]
    commit: str | None
    reject: str | None
    effect: str | None
    reversibility: str | None
    needs_approval: bool
    weaknesses: tuple[Weakness, ...]
    weak: bool


class ApprovalPlan(_Frozen):
    """P6 as decided: who, how fast, what on timeout, for which boundaries, which planes."""

    roles: tuple[str, ...]
    sla: str
    sla_from_workload: bool
    fallback: Fallback
    boundaries: tuple[str, ...]
    planes: tuple[str, ...]


class BuildStep(_Frozen):
    order: int
    title: str
    patterns: tuple[PatternId, ...]
    reason: str


class DecisionRecord(_Frozen):
    """A six-line architecture decision record; each field is one line."""

    context: str
    decision: str
    patterns: str
    boundaries: str
    consequences: str
    review_trigger: str

    def lines(self) -> tuple[str, str, str, str, str, str]:
        return (
            f"Context: {self.context}",
            f"Decision: {self.decision}",
            f"Patterns: {self.patterns}",
            f"Boundaries: {self.boundaries}",
            f"Consequences: {self.consequences}",
            f"Review trigger: {self.review_trigger}",
        )

    def render(self) -> str:
        return "\n".join(self.lines())


class Selection(_Frozen):
    """The outcome of the five steps for one workload."""

    kind: Literal["selection"] = "selection"
    schema_version: int = 1
    workload: str
    runtime_class: RuntimeClass
    steps: tuple[StepOutcome, ...]
    choices: tuple[PatternChoice, ...]
    patterns: tuple[PatternId, ...]
    """Every chosen pattern, in build order."""
    approval: ApprovalPlan | None
    inventory: tuple[BoundaryEntry, ...]
    warnings: tuple[str, ...]
    build: tuple[BuildStep, ...]
    adr: DecisionRecord

    @property
    def weak_boundaries(self) -> tuple[BoundaryEntry, ...]:
        return tuple(entry for entry in self.inventory if entry.weak)

    def choice(self, pattern: PatternId) -> PatternChoice | None:
        return next((c for c in self.choices if c.pattern == pattern), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (strings, numbers, lists, dicts only)."""
        return self.model_dump(mode="json")

    def render_text(self) -> str:
        """The selection as readable text: steps, inventory, warnings, build, record."""
        return _render(self)


# --- step 1 ------------------------------------------------------------------------------


def _classify(w: Workload) -> tuple[RuntimeClass, str]:
    horizon = format_duration(w.horizon)
    if w.horizon >= LONG_HORIZON:
        return "long-horizon", (
            f"runs last {horizon}: they outlive processes, deploys and model versions, "
            "so the pressure is on state"
        )
    budget = w.latency_budget
    interactive = budget is not None and budget <= INTERACTIVE_LATENCY
    if w.horizon <= CONVERSATIONAL_HORIZON or interactive:
        waited = f"{format_duration(budget)} per turn" if budget is not None else horizon
        return "conversational", (
            f"a person waits ({waited}): every action must be checked inside the turn, "
            "so the pressure is on control"
        )
    return "autonomous", (
        f"runs last {horizon} with nobody waiting on each step: the agent plans and splits "
        "work, so the pressure is on coordination"
    )


# --- step 2 ------------------------------------------------------------------------------


def _choose_spine(w: Workload, runtime: RuntimeClass) -> list[PatternChoice]:
    writers = len(w.delegation) + (w.fan_out or 0)
    if runtime == "long-horizon":
        spine = _pick("P5", "spine", (
            "runs wait for days on timers, replies and people: each wait must be a durable "
            "state, every write a compare-and-swap on (id, version), and timers must lapse "
            "when the row moved on"))
    elif w.consistency == "strong":
        many = f" ({writers} concurrent workers)" if writers > 1 else ""
        spine = _pick("P5", "spine", (
            f"consistency is strong{many}: two writers must never both win, so the LLM "
            "proposes one legal next state and a compare-and-swap on (id, version) decides"))
    elif w.events:
        spine = _pick("P3", "spine", (
            f"the run reacts to events ({', '.join(w.events)}): an ordered log with "
            "idempotent consumers, each event stamped with model version and prompt hash"))
    elif w.audit.replay_required:
        spine = _pick("P3", "spine", (
            "audit requires replay and nothing needs compare-and-swap: an append-only log "
            "stamped with model version and prompt hash is the record replay reads"))
    else:
        spine = _pick("P3", "spine", (
            "nothing needs compare-and-swap and nothing waits long: an append-only log of "
            "step results is the lightest spine that still resumes after a crash"))
    choices = [spine]
    if spine.pattern == "P5" and (w.events or w.audit.replay_required):
        why = (f"events arrive mid-flight ({', '.join(w.events)}): put them on a topic "
               "the state machine consumes, with idempotent consumers" if w.events else
               "audit requires replay: journal every transition as an event")
        choices.append(_pick("P3", "support", why + (
            "; stamp each with model version and prompt hash so replay divergence shows")))
    return choices


# --- step 3 ------------------------------------------------------------------------------


def _choose_coordination(w: Workload) -> list[PatternChoice]:
    choices = []
    if w.delegation:
        choices.append(_pick("P1", "coordination", (
            f"the work splits into specialists ({', '.join(w.delegation)}): the parent owns "
            "one retry budget, a per-child timeout and partial-result policy, and merges "
            "their output by deterministic priority, never by an LLM")))
    parts = []
    if w.fan_out is not None and w.fan_out >= 2:
        parts.append(
            f"fan-out of {w.fan_out}: scatter, then gather k of n with the verifier as "
            "arbiter and a per-child timeout")
    for group in w.transactions:
        parts.append(
            f"{' -> '.join(group)} must all happen or be undone: each committed step registers "
            "its compensation, run in reverse order on failure")
    if parts:
        choices.append(_pick("P2", "coordination", "; ".join(parts)))
    return choices


# --- step 4 ------------------------------------------------------------------------------


def _needs_approval(w: Workload, effect: SideEffect | None) -> str | None:
    """Why a commit of ``effect`` waits for a person, or None if the gate alone suffices."""
    if w.autonomy == "suggest":
        return "autonomy is 'suggest': a person approves every action"
    if effect is None:
        return None
    radius = effect.blast_radius
    dollars = radius.dollars or 0.0
    if effect.reversibility == "irreversible":
        if radius.dollars is None and radius.units is None:
            return f"{effect.name} is irreversible and its blast radius is not stated"
        if dollars >= SIGNIFICANT_DOLLARS or (radius.units or 0) > 1:
            return f"{effect.name} is irreversible with {_radius(effect)} at stake"
    if (effect.reversibility == "compensable" and w.autonomy == "supervised"
            and dollars >= SIGNIFICANT_DOLLARS):
        return f"autonomy is 'supervised' and {effect.name} puts {_radius(effect)} at stake"
    return None


def _radius(effect: SideEffect) -> str:
    radius = effect.blast_radius
    bits = []
    if radius.dollars is not None:
        bits.append(f"${radius.dollars:,.0f}")
    if radius.units is not None:
        bits.append(f"{radius.units} unit{'s' if radius.units != 1 else ''}")
    return " / ".join(bits) or "an unstated amount"


def _escalation_targets(w: Workload) -> list[str]:
    """Boundaries whose reject signal names a human role: they need the escalation plane."""
    return [b.name for b in w.boundaries
            if b.reject and any(role in b.reject for role in w.humans.roles)]


def _choose_control(
    w: Workload, runtime: RuntimeClass
) -> tuple[list[PatternChoice], ApprovalPlan | None, list[str]]:
    choices: list[PatternChoice] = []
    warnings: list[str] = []
    if w.side_effects or w.delegation or (w.fan_out or 0) > 1:
        dollars = [e.blast_radius.dollars for e in w.side_effects if e.blast_radius.dollars]
        cap = f"; the largest blast radius is ${max(dollars):,.0f}, so caps bound it" \
            if dollars else ""
        what = "a gate (policy, budget, role) before every side effect, logging the policy " \
               "version and reason" if w.side_effects else "a supervisor restarts failed children"
        pressure = "; control is where a conversational agent fails first" \
            if runtime == "conversational" else ""
        choices.append(_pick("P4", "control", what + cap + pressure))

    approvals = [(b.name, why) for b in w.boundaries
                 if (why := _needs_approval(w, w.effect(b.effect) if b.effect else None))]
    escalations = _escalation_targets(w)
    if not approvals and not escalations and w.autonomy not in ("suggest", "supervised"):
        return choices, None, warnings
    if w.humans.availability == "none":
        if approvals:
            warnings.append(
                "approval is needed (" + "; ".join(dict.fromkeys(why for _, why in approvals))
                + ") but no "
                "human is available: the gate must deny those commits until an approver exists")
        return choices, None, warnings

    sla = w.humans.approval_sla or DEFAULT_SLA[runtime]
    irreversible = any(e.reversibility == "irreversible" for e in w.side_effects)
    fallback: Fallback = w.humans.fallback or ("deny" if irreversible else "approve_with_cap")
    if fallback == "approve" and irreversible:
        warnings.append("the approval fallback is 'approve' while irreversible effects exist: "
                        "a lapsed SLA would commit what nobody can undo")
    planes = ["kill switch"]
    if escalations:
        planes.append("escalation")
    if approvals:
        planes.append("approval with SLA")
    if (w.fan_out or 0) > 1 or any((e.blast_radius.units or 0) > 1 for e in w.side_effects):
        planes.append("throttling")
    reasons = list(dict.fromkeys(why for _, why in approvals))  # once each, in order
    if escalations:
        reasons.append(f"reject signals of {', '.join(escalations)} escalate to a person: a "
                       "durable suspend until someone decides")
    if not reasons:
        reasons.append(f"autonomy is {w.autonomy!r}: a person reviews what the agent does")
    sla_note = "" if w.humans.approval_sla else " (no SLA in the workload: defaulted, set one)"
    reasons.append(f"a person has {format_duration(sla)} to decide{sla_note}, then {fallback}")
    choices.append(_pick("P6", "control", "; ".join(reasons)))
    plan = ApprovalPlan(
        roles=w.humans.roles or ("approver",),
        sla=format_duration(sla),
        sla_from_workload=w.humans.approval_sla is not None,
        fallback=fallback,
        boundaries=tuple(name for name, _ in approvals),
        planes=tuple(planes),
    )
    return choices, plan, warnings


def _pick(pattern: PatternId, role: Role, reason: str) -> PatternChoice:
    name, concern = PATTERNS[pattern]
    return PatternChoice(pattern=pattern, name=name, concern=concern, role=role, reason=reason)


# --- the inventory -----------------------------------------------------------------------


def _weaknesses(b: BoundarySpec, effect: SideEffect | None) -> tuple[Weakness, ...]:
    risky = effect is None or effect.reversibility != "reversible"
    found = []
    if b.proposer is None:
        found.append(Weakness(part="proposer", severity="low", why=(
            "no proposer named: either nothing stochastic crosses here (then it is plain "
            "code, not a boundary) or the model call is undocumented and unaudited")))
    if not b.verifiers:
        found.append(Weakness(part="verifier", severity="high" if risky else "medium", why=(
            "nothing deterministic checks the proposal, so whatever the model proposes is "
            "committed; the reject signal can never fire")))
    if b.commit is None:
        found.append(Weakness(part="commit", severity="low", why=(
            "no commit named: if the accepted proposal drives an action elsewhere, that "
            "action escapes the boundary's idempotency key and audit record")))
    if b.reject is None:
        found.append(Weakness(part="reject", severity="high" if risky else "medium", why=(
            "no reject signal: a refused proposal has nowhere to go and risks being dropped "
            "or reported to the model as completed")))
    return tuple(found)


def _inventory(w: Workload) -> tuple[BoundaryEntry, ...]:
    entries = []
    for b in w.boundaries:
        effect = w.effect(b.effect) if b.effect else None
        weaknesses = _weaknesses(b, effect)
        entries.append(BoundaryEntry(
            name=b.name, proposer=b.proposer, verifiers=b.verifiers, commit=b.commit,
            reject=b.reject, effect=b.effect,
            reversibility=effect.reversibility if effect else None,
            needs_approval=_needs_approval(w, effect) is not None,
            weaknesses=weaknesses, weak=bool(weaknesses),
        ))
    return tuple(entries)


def _inventory_warnings(w: Workload) -> list[str]:
    warnings = []
    if not w.boundaries:
        warnings.append("no LLM-to-action boundaries are listed: the inventory is empty")
    covered = {b.effect for b in w.boundaries}
    for effect in w.side_effects:
        if w.boundaries and effect.name not in covered:
            warnings.append(f"side effect {effect.name} is committed by no listed boundary: "
                            "if a model decides it, that crossing is unaudited")
    for group in w.transactions:
        kinds = [w.effect(name) for name in group]
        irreversible = [e.name for e in kinds if e and e.reversibility == "irreversible"]
        if len(irreversible) > 1:
            warnings.append(f"transaction {' -> '.join(group)} has {len(irreversible)} "
                            "irreversible steps: a failure after the first cannot be undone")
        if irreversible and group[-1] != irreversible[-1]:
            warnings.append(f"transaction {' -> '.join(group)}: move irreversible step "
                            f"{irreversible[-1]} last so no failure after it needs undoing")
    return warnings


# --- step 5 ------------------------------------------------------------------------------


def _sequence(
    runtime: RuntimeClass, choices: list[PatternChoice], inventory: tuple[BoundaryEntry, ...],
    replay: bool,
) -> tuple[BuildStep, ...]:
    by_role: dict[Role, list[PatternId]] = {"spine": [], "support": [], "coordination": [],
                                            "control": []}
    for choice in choices:
        by_role[choice.role].append(choice.pattern)
    gate: list[PatternId] = [p for p in by_role["control"] if p == "P4"]
    human: list[PatternId] = [p for p in by_role["control"] if p == "P6"]
    weak = [e.name for e in inventory if e.weak]
    fix = f"; close the weak ones first ({', '.join(weak)})" if weak else ""
    plan: list[tuple[str, list[PatternId], str]] = [(
        "boundaries", [],
        "write every LLM-to-action crossing as a Boundary with its verifiers and reject "
        "policy before any pattern, so each pattern composes checked crossings" + fix)]
    spine = ("state spine", by_role["spine"], "state is the spine everything else records into")
    support = ("event log", by_role["support"], "events feed the spine, so they come next")
    coordination = ("coordination", by_role["coordination"],
                    "coordination wraps the spine and records into it")
    if runtime == "conversational":
        plan += [
            ("gate", gate, "conversational pressure is on control: the gate is what a user "
             "meets in the first second, so it comes first"),
            spine, support, coordination]
    elif runtime == "autonomous":
        plan += [spine, ("coordination", by_role["coordination"],
                         "autonomous pressure is on coordination: build it directly on the "
                         "spine"), support, ("gate", gate, "bound the side effects")]
    else:
        plan += [spine, support, coordination, ("gate", gate, "bound the side effects")]
    plan.append(("human in the loop", human, "escalation and approval are durable pauses, "
                 "so they need the spine and the gate underneath"))
    if replay:
        plan.append(("replay gate", [], "record journals and run divergence replay in CI "
                     "before any model or prompt change"))
    steps = [(title, pats, why) for title, pats, why in plan if pats or title in (
        "boundaries", "replay gate")]
    return tuple(BuildStep(order=i, title=title, patterns=tuple(pats), reason=why)
                 for i, (title, pats, why) in enumerate(steps, start=1))


# --- the record --------------------------------------------------------------------------


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _record(
    w: Workload, runtime: RuntimeClass, choices: list[PatternChoice], order: tuple[PatternId, ...],
    plan: ApprovalPlan | None, inventory: tuple[BoundaryEntry, ...],
) -> DecisionRecord:
    irreversible = [e.name for e in w.side_effects if e.reversibility == "irreversible"]
    context = (f"{w.name}: {runtime} workload, horizon {format_duration(w.horizon)}, autonomy "
               f"{w.autonomy}, {_count(len(w.side_effects), 'side effect')} "
               f"({len(irreversible)} irreversible), humans {w.humans.availability}")
    by_role = {c.role: c for c in reversed(choices)}
    spine = by_role["spine"]
    wraps = [c.pattern for c in choices if c.role == "coordination"]
    bounds = [c.pattern for c in choices if c.role == "control"]
    decision = f"{spine.pattern} {spine.name} as the spine"
    if "support" in by_role:
        decision += f", fed by {by_role['support'].pattern} {by_role['support'].name}"
    decision += f"; wrap with {' + '.join(wraps)}" if wraps else "; no coordination pattern"
    decision += f"; bound with {' + '.join(bounds)}" if bounds else "; no control pattern"
    names = {c.pattern: f"{c.pattern} {c.name}" for c in choices}
    weak = [f"{e.name} (no {', no '.join(x.part for x in e.weaknesses)})"
            for e in inventory if e.weak]
    boundaries = f"{len(inventory)} inventoried, {len(weak)} weak"
    boundaries += f": {'; '.join(weak)}" if weak else ""
    consequences = [_CONSEQUENCE[p] for p in order if p != "P2"]
    if "P2" in order:
        # P2 is chosen for a fan-out, a saga or both; say only what applies.
        at = order.index("P2")
        if w.fan_out and w.fan_out >= 2:
            consequences.insert(at, "gathers wait for k of n children, each with a timeout")
        if w.transactions:
            consequences.insert(at, "every committed saga step registers a compensation, "
                                "and a failed compensation escalates")
    if plan is not None:
        consequences.append(f"undecided approvals fall back to {plan.fallback} after {plan.sla}")
    if weak:
        consequences.append("weak boundaries must be closed before production")
    triggers = ["horizon, autonomy or an effect's reversibility changes",
                "a model or prompt version changes (run divergence replay first)"]
    triggers += [_TRIGGER[p] for p in order if p in _TRIGGER]
    if w.fan_out and w.fan_out >= 2:
        triggers.append("gathers often end partial")
    if w.transactions:
        triggers.append("a compensation fails")
    return DecisionRecord(
        context=_one_line(context), decision=_one_line(decision),
        patterns=_one_line(", ".join(names[p] for p in order) + " (build order)"),
        boundaries=_one_line(boundaries), consequences=_one_line("; ".join(consequences)),
        review_trigger=_one_line("revisit when " + "; or ".join(triggers)),
    )


_CONSEQUENCE: dict[PatternId, str] = {
    "P1": "the parent owns the retry budget and merges sub-agent output deterministically",
    "P3": "events carry model version and prompt hash and consumers are idempotent",
    "P4": "every side effect passes a gate that logs its policy version",
    "P5": "every write is a compare-and-swap and timers lapse when the row moved on",
    "P6": "a kill switch and durable human decisions sit on the same boundaries",
}

_TRIGGER: dict[PatternId, str] = {
    "P5": "stale writes or lapsed timers rise",
    "P6": "approval timeouts exceed 5% or approvals look rubber-stamped",
}


# --- the five steps ----------------------------------------------------------------------


def select(workload: Workload) -> Selection:
    """Run the five steps on ``workload``. Pure and deterministic: same input, same output."""
    runtime, class_reason = _classify(workload)
    state = _choose_spine(workload, runtime)
    coordination = _choose_coordination(workload)
    control, plan, control_warnings = _choose_control(workload, runtime)
    choices = state + coordination + control
    inventory = _inventory(workload)
    build = _sequence(runtime, choices, inventory, workload.audit.replay_required)
    order = tuple(p for step in build for p in step.patterns)
    steps = (
        StepOutcome(number=1, title="classify the runtime class", decision=runtime,
                    reasons=(class_reason,)),
        _step(2, "choose the state spine", state, "no state pattern"),
        _step(3, "wrap with coordination", coordination,
              "none: one worker runs one sequence of boundaries; a coordination pattern "
              "would add failure modes without a benefit"),
        _step(4, "bound with control", control, "none: no side effects and no children"),
        StepOutcome(number=5, title="sequence the build",
                    decision=" -> ".join(s.title for s in build),
                    reasons=tuple(f"{s.title}: {s.reason}" for s in build)),
    )
    return Selection(
        workload=workload.name, runtime_class=runtime, steps=steps, choices=tuple(choices),
        patterns=order, approval=plan, inventory=inventory,
        warnings=tuple(control_warnings + _inventory_warnings(workload)), build=build,
        adr=_record(workload, runtime, choices, order, plan, inventory),
    )


def _step(number: int, title: str, chosen: list[PatternChoice], none: str) -> StepOutcome:
    if not chosen:
        return StepOutcome(number=number, title=title, decision="none", reasons=(none,))
    return StepOutcome(
        number=number, title=title,
        decision=" + ".join(f"{c.pattern} {c.name}" for c in chosen),
        reasons=tuple(f"{c.pattern}: {c.reason}" for c in chosen),
    )


# --- text --------------------------------------------------------------------------------


def _render(s: Selection) -> str:
    out = [f"workload {s.workload}: {s.runtime_class}", ""]
    for step in s.steps:
        out.append(f"{step.number}. {step.title}: {step.decision}")
        out += [f"     - {reason}" for reason in step.reasons]
    if s.approval is not None:
        a = s.approval
        out += ["", f"approval: {', '.join(a.roles)} within {a.sla}, then {a.fallback}; "
                f"planes: {', '.join(a.planes)}; boundaries: {', '.join(a.boundaries) or 'none'}"]
    out += ["", f"boundaries ({len(s.inventory)}, {len(s.weak_boundaries)} weak):"]
    for e in s.inventory:
        flag = "  WEAK" if e.weak else ""
        approval = "  [approval]" if e.needs_approval else ""
        out.append(f"  {e.name}{flag}{approval}")
        out.append(f"     propose: {e.proposer or '-- missing --'}")
        out.append(f"     verify:  {', '.join(e.verifiers) or '-- missing --'}")
        effect = f" [{e.effect}, {e.reversibility}]" if e.effect else ""
        out.append(f"     commit:  {e.commit or '-- missing --'}{effect}")
        out.append(f"     reject:  {e.reject or '-- missing --'}")
        out += [f"     ! no {w.part} ({w.severity}): {w.why}" for w in e.weaknesses]
    if s.warnings:
        out += ["", "warnings:"] + [f"  ! {warning}" for warning in s.warnings]
    out += ["", "architecture decision record:"] + [f"  {line}" for line in s.adr.lines()]
    return "\n".join(out)
