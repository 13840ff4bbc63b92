"""The runtime: runs, their context, crossings, approvals and the worker loop."""

from threshold.runtime._approvals import SLA_ACTOR, decide, principal_roles
from threshold.runtime._context import RunContext
from threshold.runtime._crossing import HUMAN_VERIFIER
from threshold.runtime._results import Crossing
from threshold.runtime._runtime import Actor, AgentDef, CrashHook, Runtime, Shadow
from threshold.runtime._tracer import NoopTracer, SpanHandle, Tracer
from threshold.runtime._worker import Worker

__all__ = [
    "HUMAN_VERIFIER",
    "SLA_ACTOR",
    "Actor",
    "AgentDef",
    "CrashHook",
    "Crossing",
    "NoopTracer",
    "RunContext",
    "Runtime",
    "Shadow",
    "SpanHandle",
    "Tracer",
    "Worker",
    "decide",
    "principal_roles",
]
