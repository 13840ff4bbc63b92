"""A Python module skeleton for a selection: one Boundary per inventoried crossing, TODOs to fill.

The output is only text; it is written against the public ``threshold`` names and must always
be valid Python, whatever the workload's names and descriptions contain.
"""

from __future__ import annotations

import json
import keyword
import re
import textwrap
import unicodedata
from datetime import timedelta

from threshold.methodology._select import PATTERNS, BoundaryEntry, Selection
from threshold.methodology._workload import parse_duration

_WIDTH = 100  # the project line length: the generated code passes `ruff format` unchanged

# What each pattern asks of the code, beyond the reason it was chosen.
_PATTERN_TODO = {
    "P1": "TODO: one child per specialist with its own timeout; the parent owns the retry "
          "budget, keeps partial results, and merges by a fixed priority, never by an LLM.",
    "P2": "TODO: scatter the children and gather k of n with the verifiers as arbiter; for "
          "each committed saga step register its compensation (idempotent, reverse order).",
    "P3": "TODO: name the topics and their consumers; consumers are idempotent and every "
          "event carries the model version and prompt hash.",
    "P4": "TODO: the gate before every side effect (policy, budget, role, caps) and the "
          "supervisor's restart policy with backoff.",
    "P5": "TODO: the states and legal transitions; the LLM proposes one to_state, legality is "
          "checked deterministically, writes are compare-and-swap on (id, version), timers "
          "carry from_version.",
    "P6": "TODO: the kill switch, the approval inbox and who may decide; a human decision is a "
          "verdict on the same boundary.",
}

# Names the skeleton imports or defines itself; generated names must not shadow them.
_TAKEN = {"annotations", "timedelta", "verifier", "build_runtime", "BaseModel", "BOUNDARIES",
          "Abort", "Accept", "ApproveWithCap", "Boundary", "EffectContext", "Escalate",
          "Prompt", "Reject", "RejectPolicy", "Runtime", "VerifyContext"}


class _Names:
    """Hands out valid, unique Python identifiers derived from free text."""

    def __init__(self) -> None:
        self._used = set(_TAKEN)

    def take(self, text: str, style: str = "snake", suffix: str = "") -> str:
        words = re.sub(r"[\W_]+", " ", text, flags=re.ASCII).split() or ["unnamed"]
        if style == "camel":
            base = "".join(w[:1].upper() + w[1:] for w in words) + suffix
        elif style == "upper":
            base = "_".join(words).upper() + suffix
        else:
            base = "_".join(words).lower() + suffix
        if base[0].isdigit():
            base = "_" + base
        if keyword.iskeyword(base) or keyword.issoftkeyword(base):
            base += "_"
        name, n = base, 2
        while name in self._used:
            name, n = f"{base}_{n}", n + 1
        self._used.add(name)
        return name


def _clean(text: str) -> str:
    """One line of printable text: control characters would break the generated source."""
    printable = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    return " ".join(printable.split())


def _comment(text: str, indent: str = "", lead: str = "") -> list[str]:
    width = _WIDTH - 4 - len(indent) - 2
    wrapped = textwrap.wrap(_clean(text), width=width, initial_indent=lead,
                            subsequent_indent=" " * len(lead)) or [lead.rstrip()]
    return [f"{indent}# {line}".rstrip() for line in wrapped]


def _str(text: str) -> str:
    """A double-quoted Python literal for any text (JSON string syntax is valid Python)."""
    return json.dumps(text)


def _listing(items: list[str], indent: str, opening: str, closing: str) -> list[str]:
    """``opening`` + items + ``closing`` on one line if it fits, else one item per line."""
    flat = f"{indent}{opening}{', '.join(items)}{closing}"
    if len(flat) <= _WIDTH:
        return [flat]
    return [f"{indent}{opening}", *(f"{indent}    {item}," for item in items),
            f"{indent}{closing}"]


def _signature(head: str, params: str, tail: str) -> list[str]:
    """A ``def`` line as a formatter would write it: flat if it fits, else params indented."""
    flat = f"{head}({params}){tail}"
    return [flat] if len(flat) <= _WIDTH else [f"{head}(", f"    {params}", f"){tail}"]


def _timedelta_source(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60), ("seconds", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{unit}={count}")
    return f"timedelta({', '.join(parts) or 'seconds=0'})"


class _Writer:
    def __init__(self, selection: Selection) -> None:
        self.s = selection
        self.names = _Names()
        self.lines: list[str] = []
        self.imports = {"Accept", "Boundary", "EffectContext", "Prompt", "Reject",
                        "RejectPolicy", "Runtime", "VerifyContext", "verifier"}
        self.needs_timedelta = False
        self.shared = self._shared_verifiers()
        self.defined_verifiers: dict[str, str] = {}

    def _shared_verifiers(self) -> set[str]:
        seen: set[str] = set()
        shared: set[str] = set()
        for entry in self.s.inventory:
            for name in entry.verifiers:
                (shared if name in seen else seen).add(name)
        return shared

    def emit(self, *lines: str) -> None:
        self.lines.extend(lines)

    def boundary(self, entry: BoundaryEntry) -> str:
        model = self.names.take(entry.name, "camel", "Proposal")
        constant = self.names.take(entry.name, "upper")
        self.emit("", "", f"# --- boundary {_clean(entry.name)} ".ljust(_WIDTH, "-"))
        for part, value in (("propose: ", entry.proposer),
                            ("verify:  ", ", ".join(entry.verifiers) or None),
                            ("commit:  ", entry.commit), ("reject:  ", entry.reject)):
            self.emit(*_comment(value or "-- missing (WEAK) --", lead=part))
        if entry.effect:
            self.emit(*_comment(f"effect {entry.effect} ({entry.reversibility})", lead=" " * 9))
        self.emit("", "", f"class {model}(BaseModel):",
                  '    """The typed candidate the proposer returns. TODO: its fields."""')
        checks = [self._verifier(name, model) for name in entry.verifiers]
        commit_fn = None
        if entry.commit is not None:
            commit_fn = self.names.take(f"commit {entry.name}")
            self.emit("", "", *_signature(f"async def {commit_fn}",
                                          f"proposal: {model}, effect: EffectContext", " -> None:"),
                      '    """TODO: perform the side effect, passing effect.key to the external '
                      'system so it dedupes."""',
                      f"    raise NotImplementedError({_str('TODO: commit ' + entry.name)})")
        self.emit("", "", f"{constant} = Boundary(", f"    {_str(entry.name)},",
                  f"    output={model},")
        if entry.proposer is None:
            self.emit("    # WEAK: no proposer named. TODO: the prompt of the model call.")
        self.emit(f"    prompt=Prompt(id={_str(entry.name)}, version=\"1\", template=\"TODO\"),")
        if checks:
            self.emit(*_listing(checks, "    ", "verifiers=[", "],"))
        else:
            self.emit("    # WEAK: no verifier, so any proposal commits. TODO: add one.",
                      "    verifiers=[],")
        if commit_fn is None:
            self.emit("    # WEAK: no commit named. TODO: the side effect, or say it is advisory.",
                      "    commit=None,")
        else:
            self.emit(f"    commit={commit_fn},")
        self.emit(*self._reject_policy(entry), ")")
        return constant

    def _verifier(self, name: str, model: str) -> str:
        if name in self.defined_verifiers:
            return self.defined_verifiers[name]
        function = self.names.take(name)
        value_type = "BaseModel" if name in self.shared else model
        self.emit("", "", f"@verifier({_str(name)}, version=\"1\")",
                  *_signature(f"def {function}", f"proposal: {value_type}, ctx: VerifyContext",
                              " -> Accept | Reject:"),
                  '    """TODO: a deterministic check of (proposal, ctx): no I/O, no model '
                  'calls."""',
                  f"    raise NotImplementedError({_str('TODO: verifier ' + name)})")
        self.defined_verifiers[name] = function
        return function

    def _reject_policy(self, entry: BoundaryEntry) -> list[str]:
        roles = self.s.approval.roles if self.s.approval else ()
        text = entry.reject or ""
        named = next((r for r in roles if r in text), None)
        out = ["    on_reject=RejectPolicy("]
        if entry.reject is None:
            out.append("        # WEAK: no reject signal. TODO: retry, escalate or abort.")
        else:
            out += _comment(f"reject signal: {text}. TODO: check this mapping.", "        ")
        out.append("        max_attempts=3,")
        if named is not None:
            self.imports.add("Escalate")
            out.append(f"        exhausted=Escalate(role={_str(named)}),")
        elif "abort" in text.lower():
            self.imports.add("Abort")
            out += _listing([_str(_clean(text))], "        ", "exhausted=Abort(", "),")
        plan = self.s.approval
        if plan is not None and entry.needs_approval:
            self.imports.add("Escalate")
            self.needs_timedelta = True
            sla = _timedelta_source(parse_duration(plan.sla))
            if plan.fallback == "approve_with_cap":
                self.imports.add("ApproveWithCap")
                fallback = 'ApproveWithCap(field="TODO", cap=0.0)'
            else:
                fallback = _str(plan.fallback)
            role = named or plan.roles[0]
            out += ["        # P6: the gate rejects with code 'approval.required' until a "
                    "person decides.",
                    "        routes={",
                    "            \"approval.\": Escalate(",
                    f"                role={_str(role)},",
                    f"                sla={sla},",
                    f"                fallback={fallback},",
                    "            ),",
                    "        },"]
        out.append("    ),")
        return out

    def render(self) -> str:
        constants = [self.boundary(entry) for entry in self.s.inventory]
        body = self.lines
        self.lines = []
        self.emit("", "", "# --- patterns, in build order ".ljust(_WIDTH, "-"))
        for step in self.s.build:
            self.emit(*_comment(f"{step.title}: {step.reason}", "", f"{step.order}. "))
            for pattern in step.patterns:
                choice = self.s.choice(pattern)
                reason = choice.reason if choice else ""
                self.emit(*_comment(f"{pattern} {PATTERNS[pattern][0]}: {reason}", "", "   "))
                self.emit(*_comment(_PATTERN_TODO[pattern], "", "   "))
        listed = ", ".join(constants) + ("," if len(constants) == 1 else "")
        if len(f"BOUNDARIES = ({listed})") <= _WIDTH:
            self.emit("", f"BOUNDARIES = ({listed})")
        else:
            self.emit("", *_listing(constants, "", "BOUNDARIES = (", ")"))
        self.emit("", "",
                  "def build_runtime() -> Runtime:",
                  '    """Wire one explicit runtime: store, clock and models, no globals."""',
                  '    raise NotImplementedError("TODO: return Runtime(store=..., clock=..., '
                  'models=...)")')
        return "\n".join(self._head() + body + self.lines) + "\n"

    def _head(self) -> list[str]:
        s = self.s
        title = _clean(s.workload).replace("\\", "/").replace('"', "'")
        doc = [f'"""Skeleton for the {title} workload, generated by threshold select.',
               "", f"Runtime class: {s.runtime_class}. Patterns, in build order:"]
        doc += [f"    {c.pattern} {c.name} ({c.role})"
                for p in s.patterns for c in s.choices if c.pattern == p]
        doc += ["", "Fill in every TODO. Boundaries marked WEAK are missing a part.", '"""']
        head = [*doc, "", "from __future__ import annotations", ""]
        if self.needs_timedelta:
            head += ["from datetime import timedelta", ""]
        head += ["from pydantic import BaseModel"]
        head += ["from threshold import ("] + [f"    {n}," for n in sorted(
            self.imports, key=lambda n: (n[0].islower(), n))] + [")"]
        return head


def render_skeleton(selection: Selection) -> str:
    """Python source for the selection's composition, with TODOs where the user's code goes."""
    return _Writer(selection).render()
