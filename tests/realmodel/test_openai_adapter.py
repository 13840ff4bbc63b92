"""``OpenAIModel`` against a real llama.cpp server (tiny generated model) and against tiny
stdlib HTTP servers that misbehave on purpose.

Tests marked ``realmodel`` use the session servers of ``conftest.py``; the fault tests need
only the ``openai`` extra. Every test opts in to real model calls itself, because the
project's suite blocks them by default.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from threshold.errors import (
    ClientRequestError,
    ConnectionFailed,
    MalformedResponse,
    MissingExtraError,
    ModelTimeout,
    RealModelCallBlocked,
    ServerError,
)
from threshold.models._guard import allow_model_requests, set_model_requests_allowed
from threshold.models._protocol import (
    Completion,
    Message,
    ModelRequest,
    Sampling,
    ToolCall,
    ToolSpec,
)

try:
    from threshold.models._openai import OpenAIModel
except MissingExtraError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(str(exc), allow_module_level=True)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "review", "reject"]
    score: int = Field(ge=0, le=30)


PROMPTS = (
    "Customer ACME asks for a refund of a duplicate charge.",
    "Customer Globex wants to cancel after three outages.",
    "Customer Initech doubled its usage this quarter.",
    "Customer Umbrella disputes an invoice from March.",
)
GET_CUSTOMER = ToolSpec(
    name="get_customer",
    description="Look up a customer account",
    parameters={
        "type": "object",
        "additionalProperties": False,
        "required": ["customer"],
        "properties": {"customer": {"type": "string", "enum": ["ACME", "Globex"]}},
    },
)


def request(
    prompt: str = PROMPTS[0],
    *,
    temperature: float = 0.0,
    seed: int = 42,
    tools: tuple[ToolSpec, ...] = (),
) -> ModelRequest:
    return ModelRequest(
        messages=(
            Message("system", "Decide what to do with the customer's request. Answer in JSON."),
            Message("user", prompt),
        ),
        output_type=Decision,
        output_schema=Decision.model_json_schema(),
        sampling=Sampling(temperature=temperature, max_tokens=256),
        seed=seed,
        tools=tools,
    )


class RecordingSleep:
    """An injected ``sleep`` that records each backoff delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def complete_all(model: OpenAIModel, requests: list[ModelRequest]) -> list[Completion]:
    """Run requests one after another in one event loop, with real calls allowed."""

    async def run() -> list[Completion]:
        try:
            return [await model.complete(r) for r in requests]
        finally:
            await model.aclose()

    with allow_model_requests():
        return asyncio.run(run())


def local_model(url: str, alias: str, **options: Any) -> OpenAIModel:
    return OpenAIModel(alias, base_url=url, api_key="unused", **options)


# --- against the real llama.cpp server ---------------------------------------------------


@pytest.mark.realmodel
def test_structured_output_parses_and_respects_integer_bound_and_enum(realmodels):
    """At temperature 1 with 20 seeds every answer parses into the pydantic model, so the
    server enforced the enum and the integer 0-30 bound."""
    model = local_model(realmodels.urls["model-v1"], "model-v1")
    completions = complete_all(model, [request(temperature=1.0, seed=s) for s in range(20)])
    decisions = [Decision.model_validate_json(c.text) for c in completions]
    assert all(c.finish_reason == "stop" for c in completions)
    assert all(0 <= d.score <= 30 for d in decisions)
    assert len({c.text for c in completions}) > 1  # sampling really varied


@pytest.mark.realmodel
def test_temperature_zero_repeats_exactly(realmodels):
    """Five identical calls at temperature 0 return byte-identical text."""
    model = local_model(realmodels.urls["model-v1"], "model-v1")
    texts = {c.text for c in complete_all(model, [request(temperature=0.0)] * 5)}
    assert len(texts) == 1


@pytest.mark.realmodel
def test_fixed_seed_repeats_at_temperature_0_9_and_other_seeds_vary(realmodels):
    """At temperature 0.9 the same seed repeats five times, while ten seeds give several
    answers: the request's seed reaches the sampler."""
    model = local_model(realmodels.urls["model-v1"], "model-v1")
    repeated = complete_all(model, [request(temperature=0.9, seed=7)] * 5)
    varied = complete_all(model, [request(temperature=0.9, seed=s) for s in range(10)])
    assert len({c.text for c in repeated}) == 1
    assert len({c.text for c in varied}) > 1


@pytest.mark.realmodel
def test_two_weight_files_are_two_model_versions_with_provenance(realmodels):
    """The same prompts and seeds give different answers from v1 and v2, and each
    completion records the id of the model that served it."""
    prompts = [request(p, temperature=0.7, seed=s) for p in PROMPTS for s in range(3)]
    outputs = {}
    for alias in ("model-v1", "model-v2"):
        completions = complete_all(local_model(realmodels.urls[alias], alias), prompts)
        assert {c.served_model for c in completions} == {alias}
        assert all(c.system_fingerprint for c in completions)
        outputs[alias] = [c.text for c in completions]
    differ = sum(a != b for a, b in zip(outputs["model-v1"], outputs["model-v2"], strict=True))
    assert differ > 0
    # v2 was built with a preference for "reject": its decisions show it.
    v2_decisions = [Decision.model_validate_json(t).decision for t in outputs["model-v2"]]
    assert v2_decisions.count("reject") > len(v2_decisions) // 2


@pytest.mark.realmodel
def test_tool_calls_come_back_as_tool_call_records(realmodels):
    """A request that offers a tool gets a parsed ``ToolCall`` with schema-valid JSON
    arguments and finish_reason ``tool_calls``."""
    model = local_model(realmodels.urls["model-v1"], "model-v1")
    (completion,) = complete_all(model, [request(tools=(GET_CUSTOMER,))])
    assert completion.finish_reason == "tool_calls"
    (call,) = completion.tool_calls
    assert isinstance(call, ToolCall)
    assert call.name == "get_customer" and call.id
    assert json.loads(call.arguments)["customer"] in {"ACME", "Globex"}


@pytest.mark.realmodel
def test_tokens_cost_and_latency_are_accounted(realmodels):
    """Completions carry the server's token counts, their cost at the configured prices,
    and a measured latency."""
    model = local_model(
        realmodels.urls["model-v1"], "model-v1", price_per_1k_in=0.5, price_per_1k_out=1.5
    )
    (completion,) = complete_all(model, [request()])
    assert completion.tokens_in > 0 and completion.tokens_out > 0
    expected = (completion.tokens_in * 0.5 + completion.tokens_out * 1.5) / 1000
    assert completion.cost_usd == pytest.approx(expected)
    assert completion.latency_ms is not None and completion.latency_ms > 0


@pytest.mark.realmodel
def test_measured_start_up_and_call_latency_stay_small(realmodels):
    """Server start-up and the median latency of 20 schema-constrained calls are measured
    (run with -s to see them) and stay far below what would slow the suite down."""
    model = local_model(realmodels.urls["model-v1"], "model-v1")
    completions = complete_all(model, [request(temperature=0.7, seed=s) for s in range(20)])
    latencies = [c.latency_ms or 0.0 for c in completions]
    median_ms = statistics.median(latencies)
    print(
        "\n[realmodel] start-up (spawn to /health 200): "
        + ", ".join(f"{k} {v:.2f}s" for k, v in realmodels.startup_s.items())
        + f"; median call latency {median_ms:.1f} ms, max {max(latencies):.1f} ms over 20 calls"
    )
    assert max(realmodels.startup_s.values()) < 30
    assert median_ms < 2000


def _request_waiting_at(port: int) -> bool:
    """True once a connection to ``port`` holds request bytes the server has not read.

    Linux's socket tables list the server's side of each connection with its receive
    queue; a non-empty queue at a stopped server proves the request is on its way in.
    """
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            established = fields[3] == "01"
            unread = int(fields[4].split(":")[1], 16)
            if local_port == port and established and unread > 0:
                return True
    return False


@pytest.mark.realmodel
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp")
def test_server_killed_mid_call_is_connection_failed_not_timeout(spawn_realmodel_server, caplog):
    """SIGKILL of the server while a call waits for its answer gives ``ConnectionFailed``
    at once, not ``ModelTimeout``: the kernel resets the dead process's connections, so the
    client never waits out its timeout, and the retries find nothing listening."""
    server = spawn_realmodel_server("model-v1")
    port = int(server.url.rsplit(":", 1)[1])
    sleep = RecordingSleep()
    model = local_model(server.url + "/v1", "model-v1", timeout_s=20.0, max_retries=2,
                        sleep=sleep)
    # Freeze the server first so the request is certainly in flight, unanswered, when the
    # process dies; a kill timed against a 20 ms generation would be a race.
    os.kill(server.process.pid, signal.SIGSTOP)

    async def scenario() -> float:
        call = asyncio.create_task(model.complete(request()))
        for _ in range(500):
            if _request_waiting_at(port):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the request never reached the server's socket")
        os.kill(server.process.pid, signal.SIGKILL)
        killed = time.perf_counter()
        with pytest.raises(ConnectionFailed) as failure:
            await call
        assert "gave up after 3 attempt(s)" in "".join(failure.value.__notes__)
        return time.perf_counter() - killed

    with allow_model_requests(), caplog.at_level(logging.WARNING, "threshold.models"):
        seconds_after_kill = asyncio.run(scenario())
    assert server.process.wait(5) == -signal.SIGKILL
    first, second = (r.getMessage() for r in caplog.records)
    # The first attempt was cut off while reading its answer (a reset, not a refusal) ...
    assert "connection error" in first and "ConnectError" not in first
    # ... the retries then found nothing listening.
    assert "ConnectError" in second
    assert len(sleep.delays) == 2
    assert seconds_after_kill < 5  # no attempt waited for the 20 s timeout


# --- against stdlib servers that misbehave on purpose ------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict[str, Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def chat_body(content: str = '{"decision":"approve","score":3}') -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "fake-served",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }


class ScriptedServer:
    """A stdlib HTTP server on a thread that answers each POST with the next scripted reply
    (the last one repeats) and counts the requests it received."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = replies
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                payload = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append(json.loads(payload))
                reply = outer.replies[min(len(outer.requests), len(outer.replies)) - 1]
                if reply.delay_s:
                    outer.release.wait(reply.delay_s)
                body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body)
                data = body.encode() if isinstance(body, str) else body
                try:
                    self.send_response_only(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout); nothing to answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ScriptedServer:
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[type[ScriptedServer]]:
    yield ScriptedServer


def run_once(model: OpenAIModel, req: ModelRequest | None = None) -> Completion:
    return complete_all(model, [req or request()])[0]


def test_http_500_becomes_server_error_after_max_retries(scripted):
    """HTTP 500 is retried ``max_retries`` times with growing backoff, then raised as
    ``ServerError``: the server counts 1 + max_retries requests."""
    sleep = RecordingSleep()
    with scripted(Reply(500, {"error": {"message": "boom"}})) as server:
        model = local_model(server.url, "m", max_retries=3, sleep=sleep)
        with pytest.raises(ServerError) as failure:
            run_once(model)
    assert len(server.requests) == 4
    assert len(sleep.delays) == 3
    assert sleep.delays == sorted(sleep.delays) and sleep.delays[0] < sleep.delays[-1]
    assert failure.value.retryable


def test_429_retry_after_is_honoured_by_the_injected_sleep(scripted):
    """A 429 with ``Retry-After: 2`` makes the adapter sleep at least 2 s (through the
    injected sleep) and then succeed on the retry."""
    sleep = RecordingSleep()
    with scripted(Reply(429, {"error": {}}, {"Retry-After": "2"}), Reply(200, chat_body())) \
            as server:
        completion = run_once(local_model(server.url, "m", sleep=sleep))
    assert len(sleep.delays) == 1 and sleep.delays[0] >= 2
    assert len(server.requests) == 2
    assert Decision.model_validate_json(completion.text).decision == "approve"


def test_malformed_json_body_is_malformed_response_and_not_retried(scripted):
    """A 200 whose body is not JSON raises ``MalformedResponse`` after a single request."""
    server = scripted(Reply(200, b'{"choices": [tru'))
    with server, pytest.raises(MalformedResponse):
        run_once(local_model(server.url, "m", sleep=RecordingSleep()))
    assert len(server.requests) == 1


def test_json_without_choices_is_malformed_response(scripted):
    """A JSON body without ``choices`` (here an error envelope sent with 200) is malformed."""
    server = scripted(Reply(200, {"error": {"message": "model overloaded"}}))
    with server, pytest.raises(MalformedResponse, match="no choices"):
        run_once(local_model(server.url, "m"))


def test_response_slower_than_timeout_is_model_timeout(scripted):
    """A server slower than ``timeout_s`` yields ``ModelTimeout``, retried like other
    transient failures, without ever waiting for the slow answer."""
    sleep = RecordingSleep()
    with scripted(Reply(200, chat_body(), delay_s=5.0)) as server:
        model = local_model(server.url, "m", timeout_s=0.3, max_retries=1, sleep=sleep)
        started = time.perf_counter()
        with pytest.raises(ModelTimeout):
            run_once(model)
        elapsed = time.perf_counter() - started
    assert len(server.requests) == 2 and len(sleep.delays) == 1
    assert elapsed < 3.0


def test_other_4xx_is_client_request_error_and_not_retried(scripted):
    """HTTP 400 is the caller's problem: ``ClientRequestError``, not retryable, one request."""
    server = scripted(Reply(400, {"error": {"message": "bad schema"}}))
    with server, pytest.raises(ClientRequestError) as failure:
        run_once(local_model(server.url, "m", sleep=RecordingSleep()))
    assert not failure.value.retryable and len(server.requests) == 1


def test_undecodable_content_is_returned_as_raw_bytes(scripted):
    """Model text that is not valid UTF-8 comes back as the raw bytes, not as an error."""
    body = json.dumps(chat_body("PLACEHOLDER")).encode().replace(b"PLACEHOLDER", b"ok \xff\xfe")
    with scripted(Reply(200, body)) as server:
        completion = run_once(local_model(server.url, "m"))
    assert completion.text == b"ok \xff\xfe"


def test_request_carries_schema_seed_and_sampling(scripted):
    """The request sends the output schema as strict ``response_format``, the seed and the
    sampling settings; with tools it offers them and leaves the schema out, unless the
    model is told its server honours both."""
    with scripted(Reply(200, chat_body())) as server:
        model = local_model(server.url, "m")
        complete_all(model, [request(temperature=0.4, seed=9), request(tools=(GET_CUSTOMER,))])
        both = local_model(server.url, "m", schema_with_tools=True)
        complete_all(both, [request(tools=(GET_CUSTOMER,))])
    plain, with_tools, with_tools_and_schema = server.requests
    assert plain["response_format"]["json_schema"]["strict"] is True
    assert plain["response_format"]["json_schema"]["schema"] == Decision.model_json_schema()
    assert (plain["seed"], plain["temperature"], plain["max_tokens"]) == (9, 0.4, 256)
    assert "tools" not in plain
    assert with_tools["tools"][0]["function"]["name"] == "get_customer"
    assert "response_format" not in with_tools
    assert {"tools", "response_format"} <= with_tools_and_schema.keys()


def test_global_switch_blocks_real_calls_until_a_test_opts_in(scripted):
    """With real calls switched off a call raises ``RealModelCallBlocked`` before any
    network traffic, and ``allow_model_requests()`` opts back in."""
    with scripted(Reply(200, chat_body())) as server:
        model = local_model(server.url, "m")
        with allow_model_requests():  # restores the suite's setting on exit
            set_model_requests_allowed(False)
            with pytest.raises(RealModelCallBlocked):
                asyncio.run(model.complete(request()))
            assert server.requests == []
            with allow_model_requests():
                completion = asyncio.run(model.complete(request()))
    assert completion.served_model == "fake-served" and len(server.requests) == 1


def test_missing_openai_extra_names_the_install_line(monkeypatch):
    """Without the ``openai`` package, importing the adapter raises ``MissingExtraError``
    with the exact pip line."""
    monkeypatch.setitem(sys.modules, "openai", None)
    monkeypatch.delitem(sys.modules, "threshold.models._openai")
    with pytest.raises(MissingExtraError, match=r"pip install 'threshold\[openai\]'"):
        importlib.import_module("threshold.models._openai")
