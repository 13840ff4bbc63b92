"""Server-rendered pages: runs, a run's timeline, the approvals inbox, reports, login.

Every page gets a session (anonymous until login) so its forms carry a CSRF token; every
POST checks it. GETs only read. Untrusted text (proposals, comments, reasons) reaches the
templates as data and is escaped by Jinja2's autoescape.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment

from threshold.errors import NotFoundError, ThresholdError
from threshold.web import _csrf
from threshold.web._api import ApprovalStatus, ConsoleDep, Filter
from threshold.web._auth import SESSION_COOKIE, Session
from threshold.web._console import Console
from threshold.web._queries import PATTERNS, list_runs, run_view
from threshold.web._reports import find_report, list_reports, live_diagnosis, render_report

router = APIRouter(include_in_schema=False)
INBOX_PAGE = 100

Text = Annotated[str, Form(max_length=4000)]
Token = Annotated[str, Form(alias=_csrf.FIELD, max_length=200)]


def page_session(request: Request) -> Session:
    console: Console = request.app.state.console
    session = console.sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        session = console.sessions.create()
        request.state.new_session = True
    request.state.session = session
    return session


SessionDep = Annotated[Session, Depends(page_session)]


def set_session_cookie(request: Request, response: Response) -> None:
    """Send the session cookie when this request made or rotated the session."""
    if not getattr(request.state, "new_session", False):
        return
    console: Console = request.app.state.console
    session: Session = request.state.session
    response.set_cookie(SESSION_COOKIE, session.session_id, httponly=True, samesite="strict",
                        secure=console.secure_cookies, path="/")


def render(request: Request, template: str, *, status: int = 200,
           **context: Any) -> HTMLResponse:
    env: Environment = request.app.state.templates
    session: Session | None = getattr(request.state, "session", None)
    flash = []
    if session is not None:
        flash, session.flash = session.flash, []
    html = env.get_template(template).render(
        session=session, principal=None if session is None else session.principal,
        csrf_field=_csrf.FIELD, flash=flash, path=request.url.path, **context)
    response = HTMLResponse(html, status_code=status)
    set_session_cookie(request, response)
    return response


def redirect(request: Request, to: str) -> RedirectResponse:
    response = RedirectResponse(to, status_code=303)
    set_session_cookie(request, response)
    return response


def _require_login(session: Session) -> str:
    if session.principal is None:
        raise HTTPException(401, "log in first")
    return session.principal


def _safe_next(target: str | None) -> str:
    """Only same-site paths: ``//evil.example`` and ``https://...`` fall back to the inbox."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/approvals"


# --- reading -----------------------------------------------------------------------------


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/runs", status_code=303)


@router.get("/runs", response_class=HTMLResponse)
async def runs_page(request: Request, console: ConsoleDep, session: SessionDep,
                    state: Filter = None, outcome: Filter = None, pattern: Filter = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> HTMLResponse:
    listing = await list_runs(console.store, state=state or None, outcome=outcome or None,
                              pattern=pattern or None, limit=limit)
    chosen = {"state": state or "", "outcome": outcome or "", "pattern": pattern or ""}
    return render(request, "runs.html", listing=listing, chosen=chosen,
                  pattern_names=PATTERNS)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(request: Request, console: ConsoleDep, session: SessionDep,
                   run_id: str) -> HTMLResponse:
    view = await run_view(console.store, run_id)
    if view is None:
        raise NotFoundError(f"no run {run_id!r}")
    return render(request, "run.html", view=view, pattern_names=PATTERNS)


@router.get("/approvals", response_class=HTMLResponse)
async def approvals_page(request: Request, console: ConsoleDep, session: SessionDep,
                         status: ApprovalStatus | None = None) -> HTMLResponse:
    pending = await console.store.list_approvals(status="pending")
    decided = [] if status == "pending" else [
        a for a in await console.store.list_approvals(status=status) if a.status != "pending"]
    decided.sort(key=lambda a: a.decided_at or "", reverse=True)
    # The oldest first (the nearest SLA), and a bounded page: a simulation may leave
    # thousands waiting.
    pending.sort(key=lambda a: (a.sla_due or "~", a.created_at))
    return render(request, "approvals.html", pending=pending[:INBOX_PAGE],
                  pending_total=len(pending), decided=decided[:INBOX_PAGE])


@router.get("/reports", response_class=HTMLResponse)
async def reports_page(request: Request, console: ConsoleDep, session: SessionDep,
                       name: Filter = None) -> HTMLResponse:
    reports = list_reports(console.reports_dir)
    shown = None if not name else render_report(find_report(console.reports_dir, name))
    return render(request, "reports.html", reports=reports, shown=shown,
                  folder=console.reports_dir)


@router.get("/reports/file")
async def report_file(console: ConsoleDep, name: Annotated[str, Query(max_length=1000)]
                      ) -> FileResponse:
    """A report's bytes, for PNGs shown inline (the CSP allows images from 'self' only)."""
    report = find_report(console.reports_dir, name)
    media = {"png": "image/png", "json": "application/json"}.get(report.kind, "text/plain")
    return FileResponse(report.path, media_type=media)


@router.get("/diagnose", response_class=HTMLResponse)
async def diagnose_page(request: Request, console: ConsoleDep, session: SessionDep,
                        run_id: Filter = None) -> HTMLResponse:
    try:
        panel = await live_diagnosis(console.store, run_id)
        error = None
    except ThresholdError as exc:
        panel, error = None, str(exc)
    return render(request, "diagnose.html", panel=panel, run_id=run_id or "", error=error)


# --- login -------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, session: SessionDep,
                     next: Filter = None) -> HTMLResponse:
    return render(request, "login.html", next=_safe_next(next), error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, console: ConsoleDep, session: SessionDep,
                token: Annotated[str, Form(max_length=512)],
                next: Annotated[str, Form(max_length=1000)] = "/approvals",
                csrf: Token = "") -> Response:
    _csrf.verify(request, session, csrf)
    who = console.tokens.principal(token)
    if who is None:
        return render(request, "login.html", status=401, next=_safe_next(next),
                      error="unknown token")
    fresh = console.sessions.login(session, who)
    fresh.flash.append(f"logged in as {who}")
    request.state.session, request.state.new_session = fresh, True
    return redirect(request, _safe_next(next))


@router.post("/logout")
async def logout(request: Request, console: ConsoleDep, session: SessionDep,
                 csrf: Token = "") -> Response:
    _csrf.verify(request, session, csrf)
    console.sessions.end(session)
    request.state.session, request.state.new_session = console.sessions.create(), True
    return redirect(request, "/runs")


# --- acting ------------------------------------------------------------------------------


@router.post("/approvals/{approval_id:path}/decide")
async def decide(request: Request, console: ConsoleDep, session: SessionDep,
                 approval_id: str, decision: Annotated[str, Form(pattern="^(approve|deny)$")],
                 comment: Text = "", csrf: Token = "") -> Response:
    _csrf.verify(request, session, csrf)
    who = _require_login(session)
    decided = await console.decide(approval_id, approve=decision == "approve", principal=who,
                                   comment=comment)
    session.flash.append(f"{decided.approval_id}: {decided.status} by {who}; run "
                         f"{decided.run_id} resumes when its worker next runs")
    return redirect(request, "/approvals")


@router.post("/runs/{run_id}/kill")
async def kill(request: Request, console: ConsoleDep, session: SessionDep, run_id: str,
               reason: Annotated[str, Form(min_length=1, max_length=1000)],
               csrf: Token = "") -> Response:
    _csrf.verify(request, session, csrf)
    who = _require_login(session)
    if await console.store.get_run(run_id) is None:
        raise NotFoundError(f"no run {run_id!r}")
    stopped = await console.kill(principal=who, reason=reason, run_id=run_id)
    session.flash.append(f"kill switch by {who}: {stopped} run(s) stopped")
    return redirect(request, f"/runs/{quote(run_id, safe='')}")


def query(**params: str) -> str:
    """A query string of the non-empty parameters (for filter links in templates)."""
    return urlencode({k: v for k, v in params.items() if v})
