"""The stochastic-deterministic boundary: proposals, verdicts, verifiers and reject policies."""

from threshold.boundary._boundary import Boundary, CommitFn
from threshold.boundary._policy import (
    Abort,
    ApproveWithCap,
    Escalate,
    Fallback,
    RejectAction,
    RejectPolicy,
    Retry,
    TransportPolicy,
)
from threshold.boundary._prompt import Prompt
from threshold.boundary._proposal import Provenance
from threshold.boundary._schema import SCHEMA_VERIFIER, parse_output
from threshold.boundary._verdict import (
    Accept,
    FunctionVerifier,
    Reject,
    Verdict,
    Verifier,
    VerifyContext,
    finish_verifier,
    run_verifier,
    start_verifier,
    verifier,
)

__all__ = [
    "SCHEMA_VERIFIER",
    "Abort",
    "Accept",
    "ApproveWithCap",
    "Boundary",
    "CommitFn",
    "Escalate",
    "Fallback",
    "FunctionVerifier",
    "Prompt",
    "Provenance",
    "Reject",
    "RejectAction",
    "RejectPolicy",
    "Retry",
    "TransportPolicy",
    "Verdict",
    "Verifier",
    "VerifyContext",
    "finish_verifier",
    "parse_output",
    "run_verifier",
    "start_verifier",
    "verifier",
]
