"""threshold: a durable runtime for production LLM agents, built on the
stochastic-deterministic boundary (propose -> verify -> commit | reject)."""

from threshold.audit import AuditReport, audit
from threshold.boundary import (
    Abort,
    Accept,
    ApproveWithCap,
    Boundary,
    Escalate,
    Prompt,
    Provenance,
    Reject,
    RejectPolicy,
    Retry,
    TransportPolicy,
    Verdict,
    Verifier,
    VerifyContext,
    verifier,
)
from threshold.clock import Clock, SystemClock, VirtualClock
from threshold.effects import EffectContext
from threshold.ids import IdFactory
from threshold.models import (
    Model,
    ModelRegistry,
    ModelRequest,
    Sampling,
    ScriptedModel,
    SimModel,
)
from threshold.runtime import Crossing, RunContext, Runtime
from threshold.store import Store, open_store

__all__ = [
    "Abort",
    "Accept",
    "ApproveWithCap",
    "AuditReport",
    "Boundary",
    "Clock",
    "Crossing",
    "EffectContext",
    "Escalate",
    "IdFactory",
    "Model",
    "ModelRegistry",
    "ModelRequest",
    "Prompt",
    "Provenance",
    "Reject",
    "RejectPolicy",
    "Retry",
    "RunContext",
    "Runtime",
    "Sampling",
    "ScriptedModel",
    "SimModel",
    "Store",
    "SystemClock",
    "TransportPolicy",
    "Verdict",
    "Verifier",
    "VerifyContext",
    "VirtualClock",
    "audit",
    "open_store",
    "verifier",
]
