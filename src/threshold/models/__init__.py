"""Models: the proposer seam, the seeded ``sim`` model, fakes and real adapters (extras)."""

from threshold.models._guard import (
    allow_model_requests,
    check_model_request_allowed,
    set_model_requests_allowed,
)
from threshold.models._protocol import (
    Completion,
    Message,
    Model,
    ModelRequest,
    ModelSpec,
    Sampling,
    ToolCall,
    ToolSpec,
)
from threshold.models._registry import ModelRegistry, normalize_spec
from threshold.models._scripted import ScriptedModel
from threshold.models._sim import PROFILES, ErrorProfile, SimModel, sample_schema

__all__ = [
    "PROFILES",
    "Completion",
    "ErrorProfile",
    "Message",
    "Model",
    "ModelRegistry",
    "ModelRequest",
    "ModelSpec",
    "Sampling",
    "ScriptedModel",
    "SimModel",
    "ToolCall",
    "ToolSpec",
    "allow_model_requests",
    "check_model_request_allowed",
    "normalize_spec",
    "sample_schema",
    "set_model_requests_allowed",
]
