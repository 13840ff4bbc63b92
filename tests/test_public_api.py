"""The public surface is pinned: removing or renaming an export is a deliberate diff here."""

from __future__ import annotations

import threshold
import threshold.patterns
import threshold.testing

FACADE = [
    "Abort", "Accept", "ApproveWithCap", "AuditReport", "Boundary", "Clock", "Crossing",
    "EffectContext", "Escalate", "IdFactory", "Model", "ModelRegistry", "ModelRequest",
    "Prompt", "Provenance", "Reject", "RejectPolicy", "Retry", "RunContext", "Runtime",
    "Sampling", "ScriptedModel", "SimModel", "Store", "SystemClock", "TransportPolicy",
    "Verdict", "Verifier", "VerifyContext", "VirtualClock", "audit", "open_store", "verifier",
]


def test_facade_exports_are_pinned() -> None:
    """`threshold.__all__` is exactly the documented facade, and every name resolves."""
    assert sorted(threshold.__all__) == sorted(FACADE)
    assert all(getattr(threshold, name) is not None for name in FACADE)


def test_pattern_and_testing_exports_resolve() -> None:
    """Every name the patterns and testing packages export exists."""
    for module in (threshold.patterns, threshold.testing):
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert missing == [], module.__name__
    assert {"Saga", "StateMachine", "Topic", "PolicyGate", "Orchestrator"} <= set(
        threshold.patterns.__all__)
    assert {"CrashPlan", "VirtualClock", "ScriptedModel"} <= set(threshold.testing.__all__)
