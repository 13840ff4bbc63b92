"""The crossing engine: one durable pass through a boundary.

Per proposal attempt there are two writes: the proposal with all its verdicts and, when
every verifier accepted, the effect intent (one transaction); then the effect's result with
the crossing's end and the run step (one transaction). Everything between is re-derivable:
a crash before the first write re-proposes with the same seed; a crash after it resumes from
the journal, re-performing an effect with the same idempotency key at most.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from threshold.boundary import (
    SCHEMA_VERIFIER,
    Abort,
    Accept,
    ApproveWithCap,
    Boundary,
    Escalate,
    Provenance,
    Reject,
    Retry,
    Verdict,
    VerifyContext,
    finish_verifier,
    parse_output,
    start_verifier,
)
from threshold.boundary._schema import SCHEMA_VERIFIER_VERSION
from threshold.clock import from_iso, to_iso
from threshold.effects import EffectContext
from threshold.errors import MalformedResponse, Suspend, TransportError
from threshold.ids import derive_seed, digest, idempotency_key
from threshold.models import Completion, ModelRequest
from threshold.runtime._results import Crossing, Outcome
from threshold.store import (
    ApprovalRecord,
    AttemptRecord,
    CrossingRecord,
    EffectRecord,
    EventRecord,
    StepRecord,
    TimerRecord,
    VerdictRecord,
)

if TYPE_CHECKING:
    from threshold.runtime._context import RunContext

M = TypeVar("M", bound=BaseModel)

HUMAN_VERIFIER = "human"
# Crossings, rejects and escalations are logged here; silent unless the host configures
# logging (threshold.observability.configure_logging writes JSON lines).
_log = logging.getLogger("threshold")
_log.addHandler(logging.NullHandler())
RAW_LIMIT = 256 * 1024  # characters of raw model output kept in the journal (digest covers all)


class CrossingEngine(Generic[M]):
    def __init__(self, ctx: RunContext, seq: int, boundary: Boundary[M], inputs: dict[str, Any],
                 facts: dict[str, Any], model_spec: str, *, resume: bool) -> None:
        self.resume = resume
        self.ctx, self.seq, self.boundary = ctx, seq, boundary
        self.inputs, self.facts, self.model_spec = inputs, facts, model_spec
        self.runtime = ctx.runtime
        self.store = ctx.runtime.store
        self.crossing_id = f"{ctx.run_id}/{seq}"
        self.step_record: StepRecord | None = None
        self.key = idempotency_key(ctx.run_id, seq, boundary.action)

    def _now(self) -> str:
        return to_iso(self.runtime.clock.now())

    # entry -------------------------------------------------------------------------------
    async def run(self) -> Crossing[M]:
        with self.runtime.tracer.span(f"crossing {self.boundary.name}", **{
                "threshold.run_id": self.ctx.run_id, "threshold.crossing_id": self.crossing_id,
                "threshold.boundary": self.boundary.name,
                "threshold.boundary_version": self.boundary.version}) as span:
            result = await self._run()
            span.set(**{"threshold.outcome": result.outcome,
                        "threshold.attempts": result.attempts})
        level = logging.INFO if result.outcome == "committed" else logging.WARNING
        if _log.isEnabledFor(level):
            _log.log(level, "crossing %s", result.outcome, extra={
                "run_id": self.ctx.run_id, "crossing_id": self.crossing_id,
                "boundary": self.boundary.name, "outcome": result.outcome,
                "attempts": result.attempts, "decided_by": result.decided_by,
                "reason": result.reason or None})
        return result

    async def _run(self) -> Crossing[M]:
        state = await self.store.load_crossing(self.crossing_id) if self.resume else None
        if state is None:
            b = self.boundary
            self.crossing = CrossingRecord(
                self.crossing_id, self.ctx.run_id, self.seq, b.name, b.version, b.action,
                [list(v) for v in b.verifier_ids], "open", 0, self._now(), self.model_spec,
                b.prompt.id, b.prompt.version)
            self.attempts: list[AttemptRecord] = []
            self.verdicts: list[VerdictRecord] = []
            return await self._propose_loop()
        self.crossing, self.attempts, self.verdicts = state.crossing, state.attempts, state.verdicts
        if self.crossing.status == "escalated":
            return await self._await_human()
        return await self._resume_open(state.effect)

    async def _resume_open(self, effect: EffectRecord | None) -> Crossing[M]:
        """Continue exactly where the journal stops: a crash after the verdicts were written
        must lead to the decision those verdicts imply, not to a fresh proposal."""
        last = self.attempts[-1] if self.attempts else None
        if last is not None and last.kind == "transport_error" and last.retry_at is None:
            return await self._transport_exhausted(last)  # the failure was final
        if last is None or last.kind != "proposal":
            return await self._propose_loop()
        value = None if last.value is None else self.boundary.output.model_validate(last.value)
        rejects = [Reject(v.code or "", v.message or "", bool(v.retryable), v.hint or "",
                          v.field) for v in self.verdicts
                   if v.attempt == last.attempt and v.verdict == "reject"]
        if not rejects:
            assert value is not None
            # Effect intent recorded, effect maybe performed, result not recorded: tell the
            # effect it may be a repeat, so the receiving system knows to dedupe by key.
            if effect is not None and effect.status != "done":
                effect = replace(effect, performed=max(effect.performed, 1))
            return await self._commit(value, last.proposal_hash or "", effect, decided_by=None)
        action = self.boundary.on_reject.decide(rejects, last.attempt)
        if isinstance(action, Retry):
            return await self._propose_loop()
        return await self._reject_action(action, rejects, value, last.proposal_hash or "")

    # propose -> verify -------------------------------------------------------------------
    async def _propose_loop(self) -> Crossing[M]:
        b = self.boundary
        while True:
            attempt_no = len(self.attempts) + 1
            last = self.attempts[-1] if self.attempts else None
            if last is not None and last.kind == "transport_error" and last.retry_at:
                await self._wait_backoff(last)
            request = self._request(attempt_no)
            try:
                completion, text = await self._call_model(request, attempt_no)
            except TransportError as exc:
                outcome = await self._transport_failure(attempt_no, exc)
                if outcome is None:
                    continue
                return outcome
            self.runtime.crash_point("after_propose")
            value, dumped, verdicts, phash = await self._verify(text, completion, attempt_no)
            provenance = self._provenance(request, completion)
            attempt = AttemptRecord(
                self.crossing_id, attempt_no, "proposal", self._now(), phash, text[:RAW_LIMIT],
                dumped, provenance.model_dump(mode="json"))
            rejects = [v for _, _, v in verdicts if isinstance(v, Reject)]
            intent = None
            if not rejects and b.commit is not None:
                intent = EffectRecord(self.key, self.ctx.run_id, b.action, "intent", self._now(),
                                      self.crossing_id, phash)
            self.crossing = replace(self.crossing, attempts=attempt_no)
            records = self._verdict_records(attempt_no, phash, verdicts)
            stored = await self.store.save_attempt(self.crossing, attempt, records, intent)
            self.attempts.append(attempt)
            self.verdicts.extend(records)
            self.runtime.crash_point("after_verdict")
            if rejects and _log.isEnabledFor(logging.INFO):
                _log.info("proposal rejected", extra={
                    "run_id": self.ctx.run_id, "crossing_id": self.crossing_id,
                    "boundary": b.name, "attempt": attempt_no,
                    "codes": [r.code for r in rejects]})
            if not rejects:
                assert value is not None
                return await self._commit(value, phash, stored, decided_by=None)
            action = b.on_reject.decide(rejects, attempt_no)
            if isinstance(action, Retry):
                continue
            return await self._reject_action(action, rejects, value, phash)

    async def _call_model(self, request: ModelRequest, attempt_no: int) -> tuple[
            Completion, str]:
        """One attempt's model call, in a span named by the GenAI semantic conventions."""
        model = self.runtime.models.get(self.model_spec)
        spec = model.spec
        with self.runtime.tracer.span(f"chat {spec.name}", **{
                "gen_ai.operation.name": "chat", "gen_ai.system": spec.provider,
                "gen_ai.provider.name": spec.provider, "gen_ai.request.model": spec.name,
                "gen_ai.request.temperature": request.sampling.temperature,
                "gen_ai.request.max_tokens": request.sampling.max_tokens,
                "gen_ai.request.seed": request.seed, "threshold.model": self.model_spec,
                "threshold.model_version": spec.version, "threshold.attempt": attempt_no,
                "threshold.crossing_id": self.crossing_id,
                "threshold.prompt_hash": request.prompt_hash}) as span:
            completion = await model.complete(request)
            span.set(**{"gen_ai.response.model": completion.served_model or spec.name,
                        "gen_ai.usage.input_tokens": completion.tokens_in,
                        "gen_ai.usage.output_tokens": completion.tokens_out,
                        "gen_ai.response.finish_reasons": [completion.finish_reason or ""]})
            return completion, _decode(completion)

    def _request(self, attempt_no: int) -> ModelRequest:
        b = self.boundary
        feedback = tuple(
            f"{v.verifier}: [{v.code}]{f' (field {v.field})' if v.field else ''} {v.message}"
            + (f" Hint: {v.hint}" if v.hint else "")
            for v in self.verdicts if v.verdict == "reject" and v.verifier != HUMAN_VERIFIER)
        return ModelRequest(
            messages=b.prompt.render(self.inputs, feedback),
            output_type=b.output,
            output_schema=self.runtime.schema_for(b.output),
            sampling=b.sampling,
            seed=derive_seed(self.ctx.run.seed, self.ctx.run_id, self.seq, attempt_no),
            prompt_id=b.prompt.id, prompt_version=b.prompt.version, prompt_hash=b.prompt.hash,
            inputs=self.inputs, feedback=feedback,
        )

    async def _verify(self, text: str, completion: Completion, attempt_no: int) -> tuple[
            M | None, Any, list[tuple[str, str, Verdict]], str]:
        """The parsed proposal, its JSON form (dumped once: it is hashed and journaled), the
        verdicts and the proposal hash."""
        b = self.boundary
        if completion.finish_reason == "refusal":
            reject = Reject("model.refusal", "the model refused to answer",
                            hint="answer with the JSON object the schema describes")
            return None, None, [(SCHEMA_VERIFIER, SCHEMA_VERIFIER_VERSION, reject)], digest(text)
        value, schema_verdict = parse_output(text, b.output)
        verdicts: list[tuple[str, str, Verdict]] = [
            (SCHEMA_VERIFIER, SCHEMA_VERIFIER_VERSION, schema_verdict)]
        if value is None:
            return None, None, verdicts, digest(text)
        dumped = value.model_dump(mode="json")
        phash = digest(dumped)
        vctx = VerifyContext(self.ctx.run_id, self.seq, b.name, self.inputs,
                             self.runtime.clock.now(), attempt_no, self.facts)
        for check in b.verifiers:
            verdict = start_verifier(check, value, vctx)
            if not isinstance(verdict, (Accept, Reject)):
                verdict = await finish_verifier(check, verdict)
            verdicts.append((check.name, check.version, verdict))
        return value, dumped, verdicts, phash

    def _verdict_records(self, attempt_no: int, phash: str,
                         verdicts: list[tuple[str, str, Verdict]]) -> list[VerdictRecord]:
        at = self._now()
        out = []
        for name, version, v in verdicts:
            if isinstance(v, Accept):
                out.append(VerdictRecord(self.crossing_id, attempt_no, name, version, "accept",
                                         phash, at, message=v.note or None))
            else:
                out.append(VerdictRecord(self.crossing_id, attempt_no, name, version, "reject",
                                         phash, at, v.code, v.message, v.retryable, v.hint,
                                         v.field))
        return out

    def _provenance(self, request: ModelRequest, completion: Completion) -> Provenance:
        model = self.runtime.models.get(self.model_spec)
        return Provenance(
            model_id=model.spec.id, model_version=model.spec.version,
            served_model=completion.served_model,
            system_fingerprint=completion.system_fingerprint,
            prompt_id=request.prompt_id, prompt_version=request.prompt_version,
            prompt_hash=request.prompt_hash, sampling=request.sampling.as_dict(),
            seed=request.seed, input_digest=digest(self.inputs)[:16],
            latency_ms=completion.latency_ms, tokens_in=completion.tokens_in,
            tokens_out=completion.tokens_out, cost_usd=completion.cost_usd,
            finish_reason=completion.finish_reason,
        )

    # transport failures ------------------------------------------------------------------
    async def _transport_failure(self, attempt_no: int, exc: TransportError) -> Crossing[M] | None:
        policy = self.boundary.transport
        failures = 1 + sum(1 for a in self.attempts if a.kind == "transport_error")
        retry = exc.retryable and failures <= policy.max_retries
        retry_at = None
        if retry:
            retry_at = to_iso(self.runtime.clock.now() + policy.delay(failures, exc.retry_after))
        attempt = AttemptRecord(self.crossing_id, attempt_no, "transport_error", self._now(),
                                error_kind=exc.kind, error_message=str(exc)[:2000],
                                retry_at=retry_at)
        self.crossing = replace(self.crossing, attempts=attempt_no)
        await self.store.save_attempt(self.crossing, attempt, (), None)
        self.attempts.append(attempt)
        self.runtime.crash_point("after_transport_error")
        if retry:
            return None
        return await self._transport_exhausted(attempt)

    async def _transport_exhausted(self, last: AttemptRecord) -> Crossing[M]:
        """The end a final transport error leads to, derived from its journaled attempt so
        that a resume after a crash reaches the same one."""
        policy = self.boundary.transport
        reason = f"transport: {last.error_kind}: {last.error_message}"
        if isinstance(policy.exhausted, Escalate):
            return await self._escalate(policy.exhausted, reason, None, None)
        return await self._finish("failed", reason=reason)

    async def _wait_backoff(self, last: AttemptRecord) -> None:
        assert last.retry_at is not None
        if from_iso(last.retry_at) <= self.runtime.clock.now():
            return
        timer_id = f"{self.crossing_id}/backoff/{last.attempt}"
        timer = await self.store.get_timer(timer_id)
        if timer is None:
            await self.store.add_timer(TimerRecord(timer_id, self.ctx.run_id, last.retry_at,
                                                   "transport_backoff"))
        elif timer.status != "pending":
            return
        raise Suspend(f"transport backoff until {last.retry_at}")

    # reject actions ----------------------------------------------------------------------
    async def _reject_action(self, action: Escalate | Abort, rejects: list[Reject],
                             value: M | None, phash: str) -> Crossing[M]:
        summary = "; ".join(f"{r.code}: {r.message}" for r in rejects)
        if isinstance(action, Escalate):
            return await self._escalate(action, action.reason or summary, value, phash)
        return await self._finish("aborted", reason=action.reason or summary, rejects=rejects)

    async def _escalate(self, action: Escalate, reason: str, value: M | None,
                        phash: str | None) -> Crossing[M]:
        """A durable suspend until a principal with ``action.role`` decides."""
        now = self.runtime.clock.now()
        approval = ApprovalRecord(
            approval_id=f"apr-{self.crossing_id}", run_id=self.ctx.run_id,
            crossing_id=self.crossing_id, boundary=self.boundary.name,
            proposal_hash=phash or "", value=None if value is None else value.model_dump(
                mode="json"), reason=reason, role=action.role, created_at=to_iso(now),
            sla_due=None if action.sla is None else to_iso(now + action.sla),
            fallback=_fallback_json(action))
        self.crossing = replace(self.crossing, status="escalated", reason=reason)
        _log.warning("crossing escalated", extra={
            "run_id": self.ctx.run_id, "crossing_id": self.crossing_id,
            "boundary": self.boundary.name, "role": action.role, "reason": reason,
            "approval_id": approval.approval_id})
        await self.store.create_approval(approval)
        # After a crash before save_crossing the first approval stands; arm *its* SLA.
        approval = await self.store.get_approval(approval.approval_id) or approval
        await self.store.save_crossing(self.crossing)
        await self.store.append_event(EventRecord(
            self.ctx.run_id, "escalated", {"crossing_id": self.crossing_id, "role": action.role,
                                           "reason": reason, "approval_id": approval.approval_id},
            to_iso(now)))
        if approval.sla_due is not None:
            await self.store.add_timer(TimerRecord(sla_timer_id(approval), self.ctx.run_id,
                                                   approval.sla_due, "approval_sla"))
        raise Suspend(f"awaiting {action.role} for {approval.approval_id}")

    async def _await_human(self) -> Crossing[M]:
        approval = await self.store.get_approval(f"apr-{self.crossing_id}")
        assert approval is not None, f"escalated crossing {self.crossing_id} has no approval"
        if approval.status == "pending":
            timer = None
            if approval.sla_due is not None:
                timer = await self.store.get_timer(sla_timer_id(approval))
                if timer is None:  # a crash came between the approval and its SLA timer
                    await self.store.add_timer(TimerRecord(sla_timer_id(approval),
                                                           self.ctx.run_id, approval.sla_due,
                                                           "approval_sla"))
            if timer is None or timer.status == "pending":
                raise Suspend(f"awaiting {approval.role} for {approval.approval_id}")
            return await self._apply_fallback(approval)
        value = None if approval.value is None else self.boundary.output.model_validate(
            approval.value)
        if approval.status == "approved" and value is not None:
            verdict = VerdictRecord(self.crossing_id, self.crossing.attempts, HUMAN_VERIFIER,
                                    approval.role, "accept", approval.proposal_hash,
                                    approval.decided_at or self._now(),
                                    message=approval.comment, decided_by=approval.decided_by)
            return await self._commit_human(value, approval.proposal_hash, verdict)
        reason = f"{approval.status} by {approval.decided_by or 'sla'}: {approval.comment or ''}"
        verdict = VerdictRecord(self.crossing_id, self.crossing.attempts, HUMAN_VERIFIER,
                                approval.role, "reject", approval.proposal_hash,
                                approval.decided_at or self._now(), "human.denied",
                                approval.comment or approval.status, False,
                                decided_by=approval.decided_by)
        return await self._finish("denied", reason=reason.strip(), verdicts=[verdict],
                                  decided_by=approval.decided_by)

    async def _apply_fallback(self, approval: ApprovalRecord) -> Crossing[M]:
        """The SLA lapsed with no decision: apply the declared fallback, as the 'sla' actor."""
        from threshold.runtime._approvals import apply_timeout

        await apply_timeout(self.runtime, approval)
        refreshed = await self.store.get_approval(approval.approval_id)
        assert refreshed is not None
        if refreshed.status == "pending":  # re-routed to another role with a fresh SLA
            raise Suspend(f"re-routed to {refreshed.role}")
        return await self._await_human()

    # commit ------------------------------------------------------------------------------
    async def _commit_human(self, value: M, phash: str, verdict: VerdictRecord) -> Crossing[M]:
        intent = None
        if self.boundary.commit is not None:
            intent = await self.store.begin_effect(EffectRecord(
                self.key, self.ctx.run_id, self.boundary.action, "intent", self._now(),
                self.crossing_id, phash))
        return await self._commit(value, phash, intent, decided_by=verdict.decided_by or "sla",
                                  verdicts=[verdict])

    async def _commit(self, value: M, phash: str, intent: EffectRecord | None, *,
                      decided_by: str | None,
                      verdicts: list[VerdictRecord] | None = None) -> Crossing[M]:
        with self.runtime.tracer.span(f"effect {self.boundary.action}", **{
                "threshold.effect.action": self.boundary.action,
                "threshold.effect.key": self.key, "threshold.proposal_hash": phash,
                "threshold.decided_by": decided_by or ""}) as span:
            result = await self._perform(value, phash, intent, decided_by=decided_by,
                                         verdicts=verdicts)
            span.set(**{"threshold.outcome": result.outcome})
            return result

    async def _perform(self, value: M, phash: str, intent: EffectRecord | None, *,
                       decided_by: str | None,
                       verdicts: list[VerdictRecord] | None = None) -> Crossing[M]:
        effect_result: Any = None
        done: EffectRecord | None = None
        if self.boundary.commit is not None:
            assert intent is not None
            if intent.status == "done":
                effect_result, done = intent.result, intent
            else:
                ectx = EffectContext(intent.key, self.ctx.run_id, self.seq, self.boundary.action,
                                     self.runtime.clock.now(), intent.performed)
                shadow = self.runtime.shadow
                try:
                    effect_result = await (
                        self.boundary.commit(value, ectx) if shadow is None else
                        shadow.effect(self.boundary.action, ectx, value.model_dump(mode="json")))
                except Exception as exc:
                    message = f"{type(exc).__name__}: {exc}"
                    failed = replace(intent, status="failed", error=message,
                                     performed=intent.performed + 1, done_at=self._now())
                    return await self._finish("failed", reason=f"effect failed: {message}",
                                              effect=failed, verdicts=verdicts or [])
                self.runtime.crash_point("after_effect")
                done = replace(intent, status="done", result=effect_result,
                               performed=intent.performed + 1, done_at=self._now())
        result = await self._finish("committed", value=value, phash=phash, effect=done,
                                    effect_result=effect_result, verdicts=verdicts or [],
                                    decided_by=decided_by)
        self.runtime.crash_point("after_record")
        return result

    async def _finish(self, outcome: Outcome, *, value: M | None = None, phash: str | None = None,
                      effect: EffectRecord | None = None, effect_result: Any = None,
                      reason: str = "", rejects: list[Reject] | None = None,
                      verdicts: list[VerdictRecord] | None = None,
                      decided_by: str | None = None) -> Crossing[M]:
        if rejects is None:
            rejects = _last_rejects(self.verdicts)
        result: Crossing[M] = Crossing(
            self.boundary.name, outcome, self.crossing.attempts, value, effect_result,
            tuple(rejects), reason, decided_by, self.crossing_id, phash)
        self.crossing = replace(
            self.crossing, status=outcome, committed_hash=phash if outcome == "committed"
            else None, outcome=None if value is None else value.model_dump(mode="json"),
            ended_at=self._now(), reason=reason or None)
        self.step_record = StepRecord(self.ctx.run_id, self.seq, "cross", self.boundary.name,
                                      result.to_json(), self._now())
        await self.store.finish_crossing(self.crossing, effect=effect, step=self.step_record,
                                         verdicts=verdicts or [])
        return result


def _decode(completion: Completion) -> str:
    """Text that is not valid UTF-8 is a transport fault, not something to argue with."""
    if isinstance(completion.text, str):
        return completion.text
    try:
        return completion.text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedResponse(f"model output is not UTF-8: {exc}", retryable=True) from exc


def _last_rejects(verdicts: list[VerdictRecord]) -> list[Reject]:
    if not verdicts:
        return []
    last = max(v.attempt for v in verdicts)
    return [Reject(v.code or "", v.message or "", bool(v.retryable), v.hint or "", v.field)
            for v in verdicts if v.attempt == last and v.verdict == "reject"]


def _fallback_json(action: Escalate) -> dict[str, Any]:
    fallback = action.fallback
    data: dict[str, Any] = {"reroute_to": action.reroute_to,
                            "sla_s": None if action.sla is None else action.sla.total_seconds()}
    if isinstance(fallback, ApproveWithCap):
        data.update(kind="approve_with_cap", field=fallback.field, cap=fallback.cap)
    else:
        data.update(kind=fallback)
    return data


def sla_timer_id(approval: ApprovalRecord) -> str:
    return f"{approval.approval_id}/sla@{approval.sla_due}"


def sla_delta(fallback: dict[str, Any]) -> timedelta | None:
    seconds = fallback.get("sla_s")
    return None if seconds is None else timedelta(seconds=seconds)
