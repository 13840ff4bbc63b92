"""A proposal: a typed candidate plus the provenance that lets an auditor trust it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Provenance(BaseModel):
    """Where a proposal came from (DESIGN §2). Stored with every attempt."""

    model_config = ConfigDict(frozen=True)

    model_id: str
    model_version: str
    served_model: str | None = None
    system_fingerprint: str | None = None
    prompt_id: str
    prompt_version: str
    prompt_hash: str
    sampling: dict[str, Any]
    seed: int
    input_digest: str
    latency_ms: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    finish_reason: str | None = None
