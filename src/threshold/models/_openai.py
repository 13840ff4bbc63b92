"""An OpenAI-compatible chat-completions server as a ``Model``.

Works against any base URL that speaks ``/v1/chat/completions``: OpenAI itself, vLLM,
llama.cpp's server, Ollama. Needs the ``openai`` extra.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from threshold.errors import ConfigError, MissingExtraError
from threshold.models._guard import check_model_request_allowed
from threshold.models._protocol import Completion, Message, ModelRequest, ModelSpec, ToolCall
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
    text_or_bytes,
)

try:
    import openai
    from openai.types.chat import (
        ChatCompletionAssistantMessageParam,
        ChatCompletionMessageParam,
        ChatCompletionSystemMessageParam,
        ChatCompletionToolParam,
        ChatCompletionUserMessageParam,
    )
    from openai.types.shared_params import ResponseFormatJSONSchema
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the module
    raise MissingExtraError("openai", "openai") from exc

_ERRORS = SdkErrorTypes(openai.APITimeoutError, openai.APIConnectionError, openai.APIStatusError)


class OpenAIModel:
    """Chat completions with JSON-schema structured output, tools, seeds and typed failures.

    Every request asks for ``request.output_schema`` through ``response_format`` (strict
    JSON schema). When ``request.tools`` is non-empty the request offers them instead and
    sends no ``response_format``: llama.cpp (and other local servers) let a schema grammar
    silence the tools entirely. Set ``schema_with_tools=True`` for servers that honour both
    at once, such as OpenAI's own API.

    Retries belong to us, not to the SDK (its ``max_retries`` is 0): timeouts, 429, 5xx and
    connection failures are retried ``max_retries`` times with exponential backoff, each
    wait paced by the injectable ``sleep`` and ``jitter`` (see ``RetryPolicy``).
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
        schema_with_tools: bool = False,
    ) -> None:
        check_prices(price_per_1k_in, price_per_1k_out)
        if api_key is None and not os.environ.get("OPENAI_API_KEY"):
            raise ConfigError(
                "no API key: pass api_key=... or set OPENAI_API_KEY "
                "(local servers such as llama.cpp accept any string)"
            )
        self._spec = ModelSpec("openai", name, version or name)
        self._base_url, self._api_key, self._timeout_s = base_url, api_key, timeout_s
        self._price_in, self._price_out = price_per_1k_in, price_per_1k_out
        self._schema_with_tools = schema_with_tools
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
        return await call_with_retries(
            lambda: self._attempt(request), self._policy, model_id=self._spec.id
        )

    async def aclose(self) -> None:
        """Close the HTTP client of the running event loop, if one was opened."""
        client = self._clients.pop()
        if client is not None:
            await client.close()

    def _new_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=self._api_key, base_url=self._base_url, timeout=self._timeout_s,
            max_retries=0,  # we own retries: typed, logged and paced by an injectable sleep
        )

    async def _attempt(self, request: ModelRequest) -> Completion:
        client = self._clients.get()
        sampling = request.sampling
        tools = [_tool_param(t.name, t.description, t.parameters) for t in request.tools]
        schema_format = not tools or self._schema_with_tools
        # latency_ms is a measurement of this HTTP call, not business time: perf_counter.
        started = time.perf_counter()
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model=self._spec.name,
                messages=[_message_param(m) for m in request.messages],
                temperature=sampling.temperature,
                max_tokens=sampling.max_tokens,
                top_p=sampling.top_p if sampling.top_p is not None else openai.omit,
                seed=request.seed,
                response_format=(
                    _response_format(request) if schema_format else openai.omit
                ),
                tools=tools or openai.omit,
                tool_choice="auto" if tools else openai.omit,
            )
            body = raw.content
        except openai.OpenAIError as exc:
            error = classify(exc, _ERRORS, model_id=self._spec.id)
            if error is None:
                raise
            raise error from exc
        latency_ms = (time.perf_counter() - started) * 1000.0
        return self._completion(body, latency_ms)

    def _completion(self, body: bytes, latency_ms: float) -> Completion:
        model_id = self._spec.id
        data = json_object(body, model_id)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise malformed(model_id, "response has no choices", body)
        choice: dict[str, Any] = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            raise malformed(model_id, "first choice has no message", body)
        content = message.get("content")
        usage = data.get("usage")
        tokens_in = int_field(usage, "prompt_tokens")
        tokens_out = int_field(usage, "completion_tokens")
        return Completion(
            text=text_or_bytes(content) if isinstance(content, str) else "",
            served_model=str_field(data, "model"),
            system_fingerprint=str_field(data, "system_fingerprint"),
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=cost_usd(tokens_in, tokens_out, self._price_in, self._price_out),
            latency_ms=latency_ms,
            finish_reason=str_field(choice, "finish_reason"),
            tool_calls=_tool_calls(message.get("tool_calls"), model_id, body),
        )


# --- request building ------------------------------------------------------------------


def _message_param(message: Message) -> ChatCompletionMessageParam:
    if message.role == "system":
        return ChatCompletionSystemMessageParam(role="system", content=message.content)
    if message.role == "assistant":
        return ChatCompletionAssistantMessageParam(role="assistant", content=message.content)
    if message.role == "tool":
        # ``Message`` carries no tool_call_id, and the API rejects a tool message without
        # one, so a tool result travels as a user message that says what it is.
        content = "Tool result:\n" + message.content
        return ChatCompletionUserMessageParam(role="user", content=content)
    return ChatCompletionUserMessageParam(role="user", content=message.content)


def _response_format(request: ModelRequest) -> ResponseFormatJSONSchema:
    return {
        "type": "json_schema",
        "json_schema": {
            "name": _schema_name(request),
            "strict": True,
            "schema": dict(request.output_schema),
        },
    }


def _schema_name(request: ModelRequest) -> str:
    # OpenAI allows [a-zA-Z0-9_-]{1,64} here.
    name = "".join(
        c if (c.isascii() and c.isalnum()) or c in "_-" else "_"
        for c in request.output_type.__name__
    )
    return name[:64] or "output"


def _tool_param(
    name: str, description: str, parameters: Mapping[str, Any]
) -> ChatCompletionToolParam:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": dict(parameters)},
    }


# --- response reading -----------------------------------------------------------------


def _tool_calls(value: object, model_id: str, body: bytes) -> tuple[ToolCall, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise malformed(model_id, "tool_calls is not a list", body)
    calls = []
    for item in value:
        function = item.get("function") if isinstance(item, dict) else None
        name = str_field(function, "name")
        if not isinstance(item, dict) or not isinstance(function, dict) or name is None:
            raise malformed(model_id, "unreadable tool call", body)
        arguments = function.get("arguments")
        if not isinstance(arguments, str):  # some servers send an object, not JSON text
            arguments = json.dumps(arguments if arguments is not None else {})
        calls.append(ToolCall(id=str_field(item, "id") or "", name=name, arguments=arguments))
    return tuple(calls)
