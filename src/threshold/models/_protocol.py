"""The ``Model`` seam: a request in, untrusted text out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from threshold._record import record

Role = Literal["system", "user", "assistant", "tool"]


@record
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float = 0.0
    max_tokens: int = 512
    top_p: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens,
                "top_p": self.top_p}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call: a name, a description and a JSON schema."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text, untrusted like any model output


@record
class ModelRequest:
    """Everything a model needs for one proposal; nothing here is a live runtime object
    except ``output_type``, which adapters use only to build a schema."""

    messages: tuple[Message, ...]
    output_type: type[BaseModel]
    output_schema: Mapping[str, Any]
    sampling: Sampling = Sampling()
    seed: int = 0
    prompt_id: str = ""
    prompt_version: str = ""
    prompt_hash: str = ""
    inputs: Mapping[str, Any] = field(default_factory=dict)
    tools: tuple[ToolSpec, ...] = ()
    # Verifier feedback from earlier attempts of the same crossing (already in ``messages``
    # too); simulated models use it to decide whether to correct themselves.
    feedback: tuple[str, ...] = ()


@record
class Completion:
    """A model's answer. ``text`` is untrusted; ``bytes`` means it was not valid text."""

    text: str | bytes
    served_model: str | None = None
    system_fingerprint: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    finish_reason: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """``provider:name`` plus a version, e.g. ``sim:v2`` or ``openai:gpt-4o-mini``."""

    provider: str
    name: str
    version: str

    @property
    def id(self) -> str:
        return f"{self.provider}:{self.name}"


@runtime_checkable
class Model(Protocol):
    """A proposer. Raises ``TransportError`` subclasses for failures before text exists."""

    @property
    def spec(self) -> ModelSpec: ...

    async def complete(self, request: ModelRequest) -> Completion: ...
