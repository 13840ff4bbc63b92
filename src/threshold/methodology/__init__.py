"""The paper's tools as library functions: pattern selection (and, later, diagnosis and
the reliability decomposition)."""

from threshold.methodology._select import Selection, select
from threshold.methodology._skeleton import render_skeleton
from threshold.methodology._workload import (
    Workload,
    WorkloadError,
    builtin_workloads,
    load_builtin,
    load_workload,
)

__all__ = [
    "Selection",
    "Workload",
    "WorkloadError",
    "builtin_workloads",
    "load_builtin",
    "load_workload",
    "render_skeleton",
    "select",
]
