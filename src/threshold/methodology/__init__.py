"""The paper's tools as library functions: pattern selection, failure diagnosis from
journals, and the reliability decomposition y(t) = mu t + sigma xi(t)."""

from threshold.methodology._diagnose import SIGNATURES, Diagnosis, diagnose
from threshold.methodology._findings import PATTERN_NAMES, Finding, Thresholds
from threshold.methodology._montecarlo import Cell, SimConfig, Simulation, simulate
from threshold.methodology._reliability import (
    Estimate,
    Increment,
    Judge,
    ReliabilityReport,
    estimate_reliability,
    increments,
    report_from,
    verified,
)
from threshold.methodology._relplot import plot_estimate, plot_simulation
from threshold.methodology._select import Selection, select
from threshold.methodology._simworld import COMPOSITIONS, STRENGTHS, Composition, World
from threshold.methodology._skeleton import render_skeleton
from threshold.methodology._workload import (
    Workload,
    WorkloadError,
    builtin_workloads,
    load_builtin,
    load_workload,
)

__all__ = [
    "COMPOSITIONS",
    "PATTERN_NAMES",
    "SIGNATURES",
    "STRENGTHS",
    "Cell",
    "Composition",
    "Diagnosis",
    "Estimate",
    "Finding",
    "Increment",
    "Judge",
    "ReliabilityReport",
    "Selection",
    "SimConfig",
    "Simulation",
    "Thresholds",
    "Workload",
    "WorkloadError",
    "World",
    "builtin_workloads",
    "diagnose",
    "estimate_reliability",
    "increments",
    "load_builtin",
    "load_workload",
    "plot_estimate",
    "plot_simulation",
    "render_skeleton",
    "report_from",
    "select",
    "simulate",
    "verified",
]
