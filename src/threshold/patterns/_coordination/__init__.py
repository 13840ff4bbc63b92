"""Shared machinery of the coordination patterns (delegation, scatter-gather, saga)."""

from threshold.patterns._coordination._branches import (
    CANCELLED,
    TIMEOUT,
    BranchResult,
    BranchSpec,
    BranchStatus,
    close_interrupted,
    run_branches,
    status_of,
)
from threshold.patterns._coordination._describe import describe_coordination
from threshold.patterns._coordination._merge import Conflict, merge_by_priority

__all__ = [
    "CANCELLED",
    "TIMEOUT",
    "BranchResult",
    "BranchSpec",
    "BranchStatus",
    "Conflict",
    "close_interrupted",
    "describe_coordination",
    "merge_by_priority",
    "run_branches",
    "status_of",
]
