"""The six runtime patterns, composed from the boundary and the runtime.

Coordination: P1 ``delegation``, P2 ``scatter`` and ``saga``. State: P3 ``topics``, P5
``state_machine``. Control: P4 ``gate``, ``throttle``, ``supervisor``; P6 ``hitl``. The
policy file they read is ``policy``.
"""

from threshold.patterns.delegation import (
    Drop,
    FailFast,
    Orchestrator,
    RetryBudget,
    SubAgent,
    Substitute,
)
from threshold.patterns.gate import PolicyGate, discount_gate, role_gate, term_gate, trigger_gate
from threshold.patterns.hitl import approval_stats, breach_routes, kill_principals
from threshold.patterns.policy import GateDecision, Policy, load_policy
from threshold.patterns.saga import CompensationRetry, Saga
from threshold.patterns.scatter import Branch, FirstK, GatherAll, Vote, scatter
from threshold.patterns.state_machine import StateMachine, StateRow, TransitionProposal
from threshold.patterns.supervisor import RestartPolicy, Supervisor
from threshold.patterns.throttle import Throttle
from threshold.patterns.topics import Consumer, LatenessPolicy, Topic

__all__ = [
    "Branch",
    "CompensationRetry",
    "Consumer",
    "Drop",
    "FailFast",
    "FirstK",
    "GateDecision",
    "GatherAll",
    "LatenessPolicy",
    "Orchestrator",
    "Policy",
    "PolicyGate",
    "RestartPolicy",
    "RetryBudget",
    "Saga",
    "StateMachine",
    "StateRow",
    "SubAgent",
    "Substitute",
    "Supervisor",
    "Throttle",
    "Topic",
    "TransitionProposal",
    "Vote",
    "approval_stats",
    "breach_routes",
    "discount_gate",
    "kill_principals",
    "load_policy",
    "role_gate",
    "scatter",
    "term_gate",
    "trigger_gate",
]
