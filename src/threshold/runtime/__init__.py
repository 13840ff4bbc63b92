"""The runtime: runs, their context, crossings, approvals and the worker loop."""

from threshold.runtime._approvals import SLA_ACTOR, decide, principal_roles
from threshold.runtime._context import RunContext
from threshold.runtime._crossing import HUMAN_VERIFIER
from threshold.runtime._results import Crossing
from threshold.runtime._runtime import Actor, AgentDef, CrashHook, Runtime
from threshold.runtime._worker import Worker

__all__ = [
    "HUMAN_VERIFIER",
    "SLA_ACTOR",
    "Actor",
    "AgentDef",
    "CrashHook",
    "Crossing",
    "RunContext",
    "Runtime",
    "Worker",
    "decide",
    "principal_roles",
]
