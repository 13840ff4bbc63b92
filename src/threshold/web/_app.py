"""``create_app``: assemble the console (pages, JSON API, static files, security headers,
error mapping) around one store. Nothing is opened, read or started until a request."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threshold.errors import (
    NotFoundError,
    RuntimeFailure,
    ThresholdError,
    UnauthorizedError,
    UsageError,
)
from threshold.store import Store
from threshold.web import _api, _pages
from threshold.web._auth import SessionStore, TokenBook, load_tokens
from threshold.web._console import Console

if TYPE_CHECKING:
    from threshold.patterns.policy import Policy
    from threshold.runtime import Runtime

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-store",
}


def create_app(store: Store, *, runtime: Runtime | None = None, policy: Policy | None = None,
               tokens: Mapping[str, str] | str | Path | None = None,
               reports_dir: str | Path | None = None,
               allowed_hosts: Sequence[str] | None = None,
               secure_cookies: bool = False) -> FastAPI:
    """The console for ``store``. ``tokens`` maps bearer tokens to principals (a dict, or a
    JSON file); decisions and kills go through ``runtime`` (or a runtime made on ``store``);
    ``policy`` also limits the kill switch; ``allowed_hosts`` refuses other Host headers
    (DNS rebinding); ``secure_cookies`` for a console served over HTTPS."""
    app = FastAPI(title="threshold console", version="1", docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json",
                  description="Runs, timelines and the approvals inbox of a threshold store.")
    app.state.console = Console(store, runtime, policy, TokenBook(load_tokens(tokens)),
                                SessionStore(), None if reports_dir is None else
                                Path(reports_dir), secure_cookies)
    app.state.templates = _templates()
    app.include_router(_api.router)
    app.include_router(_pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for error, status in ((UnauthorizedError, 403), (NotFoundError, 404), (UsageError, 409),
                          (RuntimeFailure, 503), (ThresholdError, 400)):
        app.add_exception_handler(error, _threshold_error(status))
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(SecurityHeaders)
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    return app


def _templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["pathq"] = lambda v: quote(str(v), safe="")
    env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str,
                                                 ensure_ascii=False)
    env.filters["compact"] = lambda v: json.dumps(v, sort_keys=True, default=str,
                                                  ensure_ascii=False)
    env.globals["query"] = _pages.query
    return env


class SecurityHeaders:
    """Adds the security headers to every response (pages, API, static files, errors)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api") or request.url.path == "/openapi.json"


def _error(request: Request, status: int, detail: str,
           headers: Mapping[str, str] | None = None) -> Response:
    if _wants_json(request):
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)
    response = _pages.render(request, "error.html", status=status, status_code=status,
                             detail=detail)
    response.headers.update(headers or {})
    return response


def _threshold_error(status: int) -> Any:
    async def handle(request: Request, exc: Exception) -> Response:
        return _error(request, status, str(exc))

    return handle


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return _error(request, exc.status_code, str(exc.detail), exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if _wants_json(request):
        return JSONResponse({"detail": _jsonable_errors(exc)}, status_code=422)
    fields = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in exc.errors())
    return _error(request, 422, f"invalid input: {fields}")


def _jsonable_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """FastAPI's 422 body, with inputs (which may be bytes or odd objects) made JSON-safe."""
    out = []
    for e in exc.errors():
        item = {k: v for k, v in e.items() if k in ("loc", "msg", "type")}
        item["loc"] = [p if isinstance(p, str | int) else str(p) for p in e.get("loc", ())]
        out.append(item)
    return out
