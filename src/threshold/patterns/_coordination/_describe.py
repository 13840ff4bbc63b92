"""Coordination journal events (``delegation.*``, ``fanout.*``, ``saga.*``) as readable lines.

Pure data in, lines out: ``threshold runs show`` and the web console print them as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from threshold.store import EventRecord

PREFIXES = ("delegation.", "fanout.", "saga.")


def describe_coordination(events: Iterable[EventRecord]) -> list[str]:
    """One line per coordination event, in the order given (the journal's order):
    ``<time>  <kind>  <summary>``. Events of other kinds are skipped."""
    lines = []
    for event in events:
        if not event.kind.startswith(PREFIXES):
            continue
        render = _RENDER.get(event.kind, _generic)
        try:
            text = render(event.data)
        except (KeyError, TypeError, ValueError):  # an older or hand-written event
            text = _generic(event.data)
        lines.append(f"{event.at[:19]}  {event.kind:<28} {text}")
    return lines


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _generic(d: dict[str, Any]) -> str:
    return _short(d, 160)


def _attempts(n: int) -> str:
    return f"{n} attempt" + ("" if n == 1 else "s")


def _why(reason: str | None) -> str:
    return f" ({_short(reason, 100)})" if reason else ""


# delegation -----------------------------------------------------------------------------
def _dispatch(d: dict[str, Any]) -> str:
    kids = ", ".join(f"{c['child']}<-{c['task_type']} share={c['share']} "
                     f"timeout={c['timeout_s']:g}s on_missing={c['on_missing']}"
                     for c in d["children"])
    return (f"{d['orchestrator']}: dispatch {len(d['children'])} sub-task(s), budget "
            f"{d['budget_remaining']}/{d['budget_total']} left: {kids}")


def _child(d: dict[str, Any]) -> str:
    use = {"merged": "merged", "dropped": "dropped", "substituted": "default substituted",
           "failed": "fails the delegation"}[d["use"]]
    return (f"{d['orchestrator']}/{d['child']}: {d['status']} after {_attempts(d['attempts'])} "
            f"of {d['share']}{_codes(d.get('rejects'))} -> {use}{_why(d.get('reason'))}")


def _conflict(d: dict[str, Any]) -> str:
    values = ", ".join(f"{child}={_short(value, 30)}" for child, value in d["values"])
    return f"{d['orchestrator']}: conflict on {d['field']}: {values} -> {d['winner']} wins " \
           f"by {d['rule']}"


def _merged(d: dict[str, Any]) -> str:
    return (f"{d['orchestrator']}: merged {_short(d['value'])} ({_attempts(d['attempts'])}, "
            f"budget left {d['budget_remaining']})")


def _delegation_failed(d: dict[str, Any]) -> str:
    child = f" at {d['child']}" if d.get("child") else ""
    return f"{d['orchestrator']}: FAILED{child}: {_short(d['reason'], 120)}"


# fan-out --------------------------------------------------------------------------------
def _mode(d: dict[str, Any]) -> str:
    if d["mode"] == "vote":
        return f"vote {d['k']} of {d['n']} (fallback {d['fallback']})"
    if d["mode"] == "first_k":
        return f"first {d['k']} of {d['n']}"
    return f"all {d['n']}"


def _fan_started(d: dict[str, Any]) -> str:
    timeout = f", timeout {d['timeout_s']:g}s" if d.get("timeout_s") else ""
    return (f"{d['fanout']}: fan out to [{', '.join(d['branches'])}], gather {_mode(d)}, "
            f"concurrency {d['concurrency']}{timeout}")


def _fan_branch(d: dict[str, Any]) -> str:
    key = f" key={d['key']}" if d.get("key") is not None else ""
    value = f" {_short(d['value'], 60)}" if d.get("value") is not None else ""
    return (f"{d['fanout']}[{d['branch']}]: {d['status']} after {_attempts(d['attempts'])}"
            f"{key}{value}{_codes(d.get('rejects'))}{_why(d.get('reason'))}")


def _codes(codes: list[str] | None) -> str:
    return f" [{', '.join(codes)}]" if codes else ""


def _fan_vote(d: dict[str, Any]) -> str:
    groups = "; ".join(f"{key}: {', '.join(names)}" for key, names in d["groups"].items())
    verdict = (f"quorum for {d['winner']}" if d["outcome"] == "quorum"
               else f"no quorum -> {d['fallback']}")
    return (f"{d['fanout']}: {d['k']} agreeing needed, {d['voters']} accepted voted; "
            f"{groups or 'no votes'}; {verdict}")


def _fan_escalated(d: dict[str, Any]) -> str:
    return (f"{d['fanout']}: waiting for a decision on '{d['channel']}' among "
            f"[{', '.join(d['candidates'])}]")


def _fan_resolved(d: dict[str, Any]) -> str:
    what = "abort" if d.get("choose") is None else f"choose {d['choose']}"
    return f"{d['fanout']}: {d.get('by') or 'someone'} decided: {what}"


def _fan_gathered(d: dict[str, Any]) -> str:
    chosen = ", ".join(d["chosen"]) or "nothing"
    return f"{d['fanout']}: gathered {chosen} ({d['decided_by']})"


def _fan_failed(d: dict[str, Any]) -> str:
    return f"{d['fanout']}: FAILED: {_short(d['reason'], 120)}"


# saga -----------------------------------------------------------------------------------
def _saga_step(d: dict[str, Any]) -> str:
    error = f": {_short(d['error'], 100)}" if d.get("error") else ""
    return f"{d['saga']}/{d['step']}: step {d['index']} {d['status']}{error} [{d['key']}]"


def _saga_aborted(d: dict[str, Any]) -> str:
    chain = " -> ".join(d["compensate"]) or "nothing"
    return f"{d['saga']}: aborted ({_short(d['reason'], 100)}); compensating {chain}"


def _saga_compensate(d: dict[str, Any]) -> str:
    error = f": {_short(d['error'], 80)}" if d.get("error") else ""
    retry = f", retry in {d['retry_in_s']:g}s" if d.get("retry_in_s") else ""
    return f"{d['saga']}/{d['step']}: compensation attempt {d['attempt']} {d['status']}" \
           f"{error}{retry}"


def _saga_comp_failed(d: dict[str, Any]) -> str:
    return (f"{d['saga']}/{d['step']}: compensation failed {_attempts(d['attempts'])}, "
            f"ESCALATED; waiting on '{d['channel']}' ({_short(d['error'], 80)})")


def _saga_resolution(d: dict[str, Any]) -> str:
    note = f": {_short(d['note'], 80)}" if d.get("note") else ""
    return f"{d['saga']}/{d['step']}: {d['by']} chose {d['action']}{note}"


def _saga_compensated(d: dict[str, Any]) -> str:
    return f"{d['saga']}: compensated {' -> '.join(d['steps']) or 'nothing'}"


def _saga_completed(d: dict[str, Any]) -> str:
    return f"{d['saga']}: completed {' -> '.join(d['steps']) or 'no steps'}"


def _invalid(d: dict[str, Any]) -> str:
    name = d.get("saga") or d.get("fanout")
    return f"{name}: ignored an invalid resolution {_short(d.get('payload'))}: {d.get('error')}"


_RENDER: dict[str, Callable[[dict[str, Any]], str]] = {
    "delegation.dispatch": _dispatch,
    "delegation.child": _child,
    "delegation.conflict": _conflict,
    "delegation.merged": _merged,
    "delegation.failed": _delegation_failed,
    "fanout.started": _fan_started,
    "fanout.branch": _fan_branch,
    "fanout.vote": _fan_vote,
    "fanout.escalated": _fan_escalated,
    "fanout.resolved": _fan_resolved,
    "fanout.resolution_invalid": _invalid,
    "fanout.gathered": _fan_gathered,
    "fanout.failed": _fan_failed,
    "saga.step": _saga_step,
    "saga.aborted": _saga_aborted,
    "saga.compensate": _saga_compensate,
    "saga.compensation_failed": _saga_comp_failed,
    "saga.resolution": _saga_resolution,
    "saga.resolution_invalid": _invalid,
    "saga.compensated": _saga_compensated,
    "saga.completed": _saga_completed,
}
