"""``AnthropicModel`` against a local stdlib HTTP server that speaks just enough of the
Messages API: canned ``tool_use`` answers, 429 with ``Retry-After``, 500, malformed JSON.

Offline: nothing here reaches the internet. Each test opts in to real model calls itself,
because the project's suite blocks them by default.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from threshold.errors import (
    ClientRequestError,
    MalformedResponse,
    MissingExtraError,
    RateLimited,
    RealModelCallBlocked,
    ServerError,
)
from threshold.models._guard import allow_model_requests, set_model_requests_allowed
from threshold.models._protocol import Completion, Message, ModelRequest, Sampling, ToolSpec

try:
    from threshold.models._anthropic import OUTPUT_TOOL, AnthropicModel
except MissingExtraError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(str(exc), allow_module_level=True)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "review", "reject"]
    score: int = Field(ge=0, le=30)


LOOKUP = ToolSpec(
    name="get_customer",
    description="Look up a customer account",
    parameters={"type": "object", "properties": {"customer": {"type": "string"}}},
)


def request(*, tools: tuple[ToolSpec, ...] = ()) -> ModelRequest:
    return ModelRequest(
        messages=(
            Message("system", "Decide. Answer with the tool."),
            Message("user", "Customer ACME asks for a refund."),
        ),
        output_type=Decision,
        output_schema=Decision.model_json_schema(),
        sampling=Sampling(temperature=0.7, max_tokens=300),
        seed=5,
        tools=tools,
    )


def message_body(*blocks: dict[str, Any], stop_reason: str = "tool_use") -> dict[str, Any]:
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-served-1",
        "content": list(blocks), "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": 120, "output_tokens": 30, "cache_read_input_tokens": 10},
    }


def tool_use(name: str, tool_input: dict[str, Any], call_id: str = "toolu_1") -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": tool_input}


ANSWER = message_body(tool_use(OUTPUT_TOOL, {"decision": "review", "score": 12}))


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict[str, Any] = b""
    headers: dict[str, str] = field(default_factory=dict)


class MessagesServer:
    """``POST /v1/messages`` on a thread: each request gets the next scripted reply (the
    last repeats); requests are recorded as parsed JSON."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = replies
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                payload = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.paths.append(self.path)
                outer.requests.append(json.loads(payload))
                reply = outer.replies[min(len(outer.requests), len(outer.replies)) - 1]
                data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body)
                raw = data.encode() if isinstance(data, str) else data
                self.send_response_only(reply.status)  # no automatic Date: tests script it
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> MessagesServer:
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class RecordingSleep:
    """An injected ``sleep`` that records each backoff delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


def model_at(server: MessagesServer, **options: Any) -> AnthropicModel:
    return AnthropicModel("claude-test", base_url=server.url, api_key="test-key", **options)


def complete(model: AnthropicModel, req: ModelRequest | None = None) -> Completion:
    with allow_model_requests():
        return asyncio.run(model.complete(req or request()))


@pytest.fixture
def answering() -> Iterator[MessagesServer]:
    with MessagesServer(Reply(200, ANSWER)) as server:
        yield server


def test_forced_tool_input_is_the_structured_answer(answering):
    """The forced output tool's input comes back as compact JSON text that parses into the
    pydantic model, with the served model, stop reason and token accounting."""
    completion = complete(model_at(answering, price_per_1k_in=3.0, price_per_1k_out=15.0))
    assert Decision.model_validate_json(completion.text) == Decision(decision="review", score=12)
    assert completion.text == '{"decision":"review","score":12}'
    assert completion.served_model == "claude-served-1"
    assert completion.finish_reason == "tool_use"
    assert (completion.tokens_in, completion.tokens_out) == (130, 30)  # cached input counts
    assert completion.cost_usd == pytest.approx((130 * 3.0 + 30 * 15.0) / 1000)
    assert completion.latency_ms is not None and completion.tool_calls == ()


def test_request_forces_one_tool_whose_schema_is_the_output_schema(answering):
    """The request offers one tool with the output schema as ``input_schema``, forces it
    with ``tool_choice``, sends the system prompt on its own, and sends no sampling
    parameters (the Messages API has no seed and rejects temperature)."""
    complete(model_at(answering))
    (sent,) = answering.requests
    assert answering.paths == ["/v1/messages"]
    assert sent["tools"] == [{
        "name": OUTPUT_TOOL,
        "description": sent["tools"][0]["description"],
        "input_schema": Decision.model_json_schema(),
    }]
    assert sent["tool_choice"] == {"type": "tool", "name": OUTPUT_TOOL}
    assert sent["system"] == [{"type": "text", "text": "Decide. Answer with the tool."}]
    assert sent["messages"] == [{"role": "user", "content": "Customer ACME asks for a refund."}]
    assert sent["max_tokens"] == 300 and sent["model"] == "claude-test"
    assert not {"temperature", "top_p", "seed"} & sent.keys()


def test_request_tools_become_tool_calls():
    """With tools of its own the request may call any tool (``tool_choice`` any), and a
    call of one of them comes back as a ``ToolCall``, not as the answer."""
    reply = Reply(200, message_body(tool_use("get_customer", {"customer": "ACME"}, "toolu_9")))
    with MessagesServer(reply) as server:
        completion = complete(model_at(server), request(tools=(LOOKUP,)))
    (sent,) = server.requests
    assert sent["tool_choice"] == {"type": "any"}
    assert [t["name"] for t in sent["tools"]] == ["get_customer", OUTPUT_TOOL]
    assert completion.text == ""
    (call,) = completion.tool_calls
    assert (call.id, call.name, json.loads(call.arguments)) == (
        "toolu_9", "get_customer", {"customer": "ACME"}
    )


def test_429_retry_after_is_honoured_by_the_injected_sleep(sleep):
    """A 429 with ``Retry-After: 2`` makes the adapter sleep at least 2 s through the
    injected sleep, then the retry succeeds."""
    limited = Reply(429, {"type": "error", "error": {"type": "rate_limit_error"}},
                    {"Retry-After": "2"})
    with MessagesServer(limited, Reply(200, ANSWER)) as server:
        completion = complete(model_at(server, sleep=sleep))
    assert len(sleep.delays) == 1 and sleep.delays[0] >= 2
    assert len(server.requests) == 2
    assert Decision.model_validate_json(completion.text).score == 12


def test_retry_after_http_date_is_measured_against_the_server_date(sleep):
    """A ``Retry-After`` HTTP date is turned into seconds against the response's own
    ``Date`` header, so the adapter needs no clock of its own."""
    limited = Reply(429, {"type": "error"}, {
        "Date": "Wed, 21 Oct 2026 07:28:00 GMT",
        "Retry-After": "Wed, 21 Oct 2026 07:28:03 GMT",
    })
    with MessagesServer(limited, Reply(200, ANSWER)) as server:
        complete(model_at(server, sleep=sleep))
    assert sleep.delays == [pytest.approx(3.0)]


def test_retry_after_longer_than_backoff_max_is_left_to_the_caller(sleep):
    """A server asking for a longer pause than ``backoff_max_s`` gets no in-process sleep:
    ``RateLimited`` carries ``retry_after`` so the durable runtime can wait with a timer."""
    limited = Reply(429, {"type": "error"}, {"Retry-After": "120"})
    with MessagesServer(limited) as server, pytest.raises(RateLimited) as failure:
        complete(model_at(server, sleep=sleep, backoff_max_s=8.0))
    assert failure.value.retry_after == 120 and sleep.delays == []
    assert len(server.requests) == 1


def test_http_500_becomes_server_error_after_max_retries(sleep):
    """HTTP 500 is retried ``max_retries`` times with exponential backoff and then raised
    as ``ServerError``; the server counts 1 + max_retries requests."""
    failing = Reply(500, {"type": "error", "error": {"type": "api_error"}})
    with MessagesServer(failing) as server, pytest.raises(ServerError):
        complete(model_at(server, sleep=sleep, max_retries=2, backoff_base_s=1.0,
                          jitter=lambda: 1.0))
    assert len(server.requests) == 3
    assert sleep.delays == [1.0, 2.0]  # full jitter fraction: base, then base * 2


def test_malformed_json_is_malformed_response_and_not_retried(sleep):
    """A 200 whose body is not JSON raises ``MalformedResponse`` after one request."""
    with MessagesServer(Reply(200, b"<html>oops")) as server, pytest.raises(MalformedResponse):
        complete(model_at(server, sleep=sleep))
    assert len(server.requests) == 1 and sleep.delays == []


@pytest.mark.parametrize("body", [b"[" * 200_000, b'{"n": ' + b"9" * 5000 + b"}"],
                         ids=["nested-too-deep", "integer-too-long"])
def test_pathological_json_is_malformed_response(body, sleep):
    """JSON nested past the parser's depth, or with a too-long integer, is a
    ``MalformedResponse``, never a stray exception out of the adapter."""
    with MessagesServer(Reply(200, body)) as server, pytest.raises(MalformedResponse):
        complete(model_at(server, sleep=sleep))
    assert len(server.requests) == 1


def test_json_without_content_blocks_is_malformed_response():
    """A JSON object that is not a message (no ``content`` list) is malformed."""
    with MessagesServer(Reply(200, {"type": "message", "content": None})) as server, \
            pytest.raises(MalformedResponse, match="no content blocks"):
        complete(model_at(server))


def test_overloaded_529_is_a_retried_server_error(sleep):
    """Anthropic's 529 (overloaded) counts as a 5xx: retried, then ``ServerError``."""
    with MessagesServer(Reply(529, {"type": "error"}), Reply(200, ANSWER)) as server:
        complete(model_at(server, sleep=sleep))
    assert len(server.requests) == 2 and len(sleep.delays) == 1


def test_bad_request_is_client_request_error_and_not_retried(sleep):
    """HTTP 400 is ``ClientRequestError``: not retryable, one request."""
    bad = Reply(400, {"type": "error", "error": {"type": "invalid_request_error"}})
    with MessagesServer(bad) as server, pytest.raises(ClientRequestError):
        complete(model_at(server, sleep=sleep))
    assert len(server.requests) == 1 and sleep.delays == []


def test_global_switch_blocks_until_opt_in(answering):
    """With real calls switched off the adapter raises ``RealModelCallBlocked`` before
    sending anything; ``allow_model_requests()`` opts in."""
    model = model_at(answering)
    with allow_model_requests():  # restores the suite's setting on exit
        set_model_requests_allowed(False)
        with pytest.raises(RealModelCallBlocked):
            asyncio.run(model.complete(request()))
        assert answering.requests == []
        with allow_model_requests():
            asyncio.run(model.complete(request()))
    assert len(answering.requests) == 1


def test_missing_anthropic_extra_names_the_install_line(monkeypatch):
    """Without the ``anthropic`` package, importing the adapter raises
    ``MissingExtraError`` with the exact pip line."""
    monkeypatch.setitem(sys.modules, "anthropic", None)
    monkeypatch.delitem(sys.modules, "threshold.models._anthropic")
    with pytest.raises(MissingExtraError, match=r"pip install 'threshold\[anthropic\]'"):
        importlib.import_module("threshold.models._anthropic")
