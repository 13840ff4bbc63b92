"""Anthropic's Messages API as a ``Model``. Needs the ``anthropic`` extra."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

from threshold.errors import ConfigError, MissingExtraError
from threshold.models._guard import check_model_request_allowed
from threshold.models._protocol import Completion, ModelRequest, ModelSpec, ToolCall
from threshold.models._retry import (
    PerLoop,
    RetryPolicy,
    SdkErrorTypes,
    call_with_retries,
    check_prices,
    classify,
    cost_usd,
    int_field,
    json_object,
    malformed,
    str_field,
)

try:
    import anthropic
    from anthropic.types import (
        MessageParam,
        TextBlockParam,
        ToolChoiceAnyParam,
        ToolChoiceToolParam,
        ToolParam,
    )
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the module
    raise MissingExtraError("anthropic", "anthropic") from exc

_ERRORS = SdkErrorTypes(
    anthropic.APITimeoutError, anthropic.APIConnectionError, anthropic.APIStatusError
)

OUTPUT_TOOL = "threshold_output"
"""The forced tool whose input is the structured answer."""


class AnthropicModel:
    """Messages API calls with structured output, tools, retries and typed failures.

    Structured output is a single tool, ``threshold_output``, whose ``input_schema`` is the
    request's output schema; ``tool_choice`` forces it, and its input, as compact JSON
    text, is the completion's text. When the request offers tools of its own they are
    offered beside it with ``tool_choice={"type": "any"}``: the model either answers
    (through ``threshold_output``) or calls tools, returned as ``tool_calls``.

    Only ``max_tokens`` is taken from ``request.sampling``, and ``request.seed`` is not
    sent: the Messages API has no seed, and its current version (the default of the 2.x
    SDK) rejects ``temperature`` and ``top_p`` with HTTP 400. Retries, backoff and error
    mapping are those of ``OpenAIModel`` (one implementation, in ``_retry``).
    """

    def __init__(
        self,
        name: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        version: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        price_per_1k_in: float = 0.0,
        price_per_1k_out: float = 0.0,
        jitter: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        check_prices(price_per_1k_in, price_per_1k_out)
        self._spec = ModelSpec("anthropic", name, version or name)
        self._base_url, self._api_key, self._timeout_s = base_url, api_key, timeout_s
        self._price_in, self._price_out = price_per_1k_in, price_per_1k_out
        self._policy = RetryPolicy(
            max_retries=max_retries, backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s,
            attempt_timeout_s=timeout_s, jitter=jitter, sleep=sleep or asyncio.sleep,
        )
        self._clients = PerLoop(self._new_client)

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    async def complete(self, request: ModelRequest) -> Completion:
        """One proposal; raises ``TransportError`` subclasses when no text could be had."""
        check_model_request_allowed(self._spec.id)
        if any(tool.name == OUTPUT_TOOL for tool in request.tools):
            raise ConfigError(f"the tool name {OUTPUT_TOOL!r} is reserved for the answer")
        return await call_with_retries(
            lambda: self._attempt(request), self._policy, model_id=self._spec.id
        )

    async def aclose(self) -> None:
        """Close the HTTP client of the running event loop, if one was opened."""
        client = self._clients.pop()
        if client is not None:
            await client.close()

    def _new_client(self) -> anthropic.AsyncAnthropic:
        try:
            return anthropic.AsyncAnthropic(
                api_key=self._api_key, base_url=self._base_url, timeout=self._timeout_s,
                max_retries=0,  # we own retries: typed, logged and paced by an injectable sleep
            )
        except anthropic.AnthropicError as exc:  # e.g. no credentials configured
            raise ConfigError(f"{self._spec.id}: {exc}") from exc

    async def _attempt(self, request: ModelRequest) -> Completion:
        client = self._clients.get()
        system = [m.content for m in request.messages if m.role == "system"]
        output_tool: ToolParam = {
            "name": OUTPUT_TOOL,
            "description": "Give your final answer. The input of this tool is the answer.",
            "input_schema": dict(request.output_schema),
        }
        tools: list[ToolParam] = [
            {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
            for t in request.tools
        ]
        tools.append(output_tool)
        choice: ToolChoiceToolParam | ToolChoiceAnyParam = (
            {"type": "any"} if request.tools else {"type": "tool", "name": OUTPUT_TOOL}
        )
        # latency_ms is a measurement of this HTTP call, not business time: perf_counter.
        started = time.perf_counter()
        try:
            raw = await client.messages.with_raw_response.create(
                model=self._spec.name,
                max_tokens=request.sampling.max_tokens,
                messages=_messages(request),
                system=[_text_block(text) for text in system] if system else anthropic.omit,
                tools=tools,
                tool_choice=choice,
            )
            body = await raw.read()  # already buffered: the call was not streamed
        except anthropic.AnthropicError as exc:
            error = classify(exc, _ERRORS, model_id=self._spec.id)
            if error is None:
                raise
            raise error from exc
        latency_ms = (time.perf_counter() - started) * 1000.0
        return self._completion(body, latency_ms)

    def _completion(self, body: bytes, latency_ms: float) -> Completion:
        model_id = self._spec.id
        data = json_object(body, model_id)
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise malformed(model_id, "response has no content blocks", body)
        texts: list[str] = []
        answer: str | None = None
        calls: list[ToolCall] = []
        for block in blocks:
            kind = str_field(block, "type")
            if kind == "text":
                texts.append(str_field(block, "text") or "")
            elif kind == "tool_use":
                name = str_field(block, "name")
                tool_input = block.get("input")
                if name is None or not isinstance(tool_input, dict):
                    raise malformed(model_id, "unreadable tool_use block", body)
                arguments = json.dumps(tool_input, separators=(",", ":"), ensure_ascii=False)
                if name == OUTPUT_TOOL:
                    answer = arguments
                else:
                    calls.append(ToolCall(str_field(block, "id") or "", name, arguments))
        usage = data.get("usage")
        # Everything the prompt cost, cached or not, counts as input.
        tokens_in = sum(
            int_field(usage, key)
            for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        tokens_out = int_field(usage, "output_tokens")
        return Completion(
            text=answer if answer is not None else "".join(texts),
            served_model=str_field(data, "model"),
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=cost_usd(tokens_in, tokens_out, self._price_in, self._price_out),
            latency_ms=latency_ms,
            finish_reason=str_field(data, "stop_reason"),
            tool_calls=tuple(calls),
        )


def _messages(request: ModelRequest) -> list[MessageParam]:
    out: list[MessageParam] = []
    for message in request.messages:
        if message.role == "system":
            continue  # sent as the top-level ``system`` parameter
        if message.role == "assistant":
            out.append({"role": "assistant", "content": message.content})
        elif message.role == "tool":
            # ``Message`` carries no tool_use_id, which a tool_result block needs, so a tool
            # result travels as a user message that says what it is.
            out.append({"role": "user", "content": "Tool result:\n" + message.content})
        else:
            out.append({"role": "user", "content": message.content})
    return out


def _text_block(text: str) -> TextBlockParam:
    return {"type": "text", "text": text}
