"""Proposers for replay: ``recorded`` serves a journal's proposals; the others wrap a live
model so that every crossing of a replayed run asks the model under test.

A crossing asks its model with ``seed = derive_seed(run seed, run id, step, attempt)``,
so the seed alone names the (run, crossing, attempt) a request belongs to: the recorded
model needs no help from the runtime to find the answer it must give.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from threshold.boundary import Prompt
from threshold.clock import from_iso
from threshold.errors import TransportError
from threshold.ids import derive_seed
from threshold.models import Completion, Model, ModelRegistry, ModelRequest, ModelSpec
from threshold.replay._journal import RunJournal
from threshold.store import AttemptRecord

RECORDED = "recorded"


class ProposalNotRecorded(TransportError):
    """The replayed code asked for a proposal the journal does not hold (a new crossing, or
    one more attempt than was recorded). Not retryable: the journal has nothing more."""

    kind = "not_recorded"

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class ReplayedTransportError(TransportError):
    """A transport failure served again from the journal, with its recorded kind."""

    def __init__(self, kind: str, message: str, *, retryable: bool,
                 retry_after: float | None) -> None:
        super().__init__(message, retryable=retryable, retry_after=retry_after)
        self.kind = kind


class RecordedModel:
    """Spec ``recorded``: for each (crossing, attempt), the raw text the journal recorded,
    or the transport failure it recorded, raised again with the same kind and message."""

    def __init__(self, journals: Iterable[RunJournal] = ()) -> None:
        self._spec = ModelSpec("recorded", "journal", "1")
        self._answers: dict[int, AttemptRecord] = {}
        self.served = 0
        for journal in journals:
            self.add(journal)

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    def add(self, journal: RunJournal) -> None:
        run = journal.run
        for seq, crossing in journal.crossings.items():
            for attempt in crossing.attempts:
                self._answers[derive_seed(run.seed, run.run_id, seq, attempt.attempt)] = attempt

    async def complete(self, request: ModelRequest) -> Completion:
        attempt = self._answers.get(request.seed)
        if attempt is None:
            raise ProposalNotRecorded(
                f"the journal holds no proposal for this request (prompt {request.prompt_id}"
                f"@{request.prompt_version}, seed {request.seed})")
        self.served += 1
        if attempt.kind == "transport_error":
            raise _transport_error(attempt)
        prov: Mapping[str, Any] = attempt.provenance or {}
        return Completion(
            text=attempt.raw or "", served_model=prov.get("served_model"),
            system_fingerprint=prov.get("system_fingerprint"),
            tokens_in=int(prov.get("tokens_in") or 0), tokens_out=int(prov.get("tokens_out") or 0),
            cost_usd=float(prov.get("cost_usd") or 0.0), latency_ms=prov.get("latency_ms"),
            finish_reason=prov.get("finish_reason"))


def _transport_error(attempt: AttemptRecord) -> ReplayedTransportError:
    # A recorded retry time means the failure was retried; the gap to it reproduces the
    # original backoff, including a server's Retry-After.
    retry_after = None
    if attempt.retry_at is not None:
        retry_after = (from_iso(attempt.retry_at) - from_iso(attempt.at)).total_seconds()
    return ReplayedTransportError(attempt.error_kind or "transport", attempt.error_message or "",
                                  retryable=attempt.retry_at is not None, retry_after=retry_after)


class PromptOverride:
    """Asks ``model`` with another version of some prompts (by prompt id): the messages are
    rendered from the new template, and the sampling seed is re-derived from the new prompt's
    hash, since a different prompt is a different request."""

    def __init__(self, model: Model, prompts: Mapping[str, Prompt]) -> None:
        self._model, self._prompts = model, dict(prompts)

    @property
    def spec(self) -> ModelSpec:
        return self._model.spec

    async def complete(self, request: ModelRequest) -> Completion:
        prompt = self._prompts.get(request.prompt_id)
        if prompt is not None:
            request = replace(request, messages=prompt.render(request.inputs, request.feedback),
                              prompt_version=prompt.version, prompt_hash=prompt.hash,
                              seed=derive_seed(request.seed, prompt.hash))
        return await self._model.complete(request)


class ReplayRegistry(ModelRegistry):
    """Serves one proposer for every spec, so a crossing that names its own model is replayed
    under the model under test too. ``spec=None`` means the recorded model."""

    def __init__(self, recorded: RecordedModel, spec: str | None = None, *,
                 prompts: Mapping[str, Prompt] | None = None, sim_seed: int = 0,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(sim_seed=sim_seed, options=options)
        self.recorded, self.spec, self.prompts = recorded, spec, dict(prompts or {})
        self._proposer: Model | None = None

    def get(self, spec: str) -> Model:
        if self._proposer is None:
            base: Model = self.recorded if self.spec is None else super().get(self.spec)
            self._proposer = PromptOverride(base, self.prompts) if self.prompts else base
        return self._proposer
