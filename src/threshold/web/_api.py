"""The JSON API: reads are open (the console binds to localhost); decisions and the kill
switch need a bearer token whose principal holds the role, checked by the runtime."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from threshold.errors import NotFoundError
from threshold.web._console import Console
from threshold.web._queries import list_runs, run_view
from threshold.web._schemas import (
    ApprovalOut,
    DecisionIn,
    ErrorOut,
    KillIn,
    KillOut,
    RunDetailOut,
    RunListOut,
    RunOut,
    TimelineOut,
)

_bearer = HTTPBearer(auto_error=False, description="a token from the console's tokens file")


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


def principal(request: Request, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Security(_bearer)] = None) -> str:
    """The authenticated principal, or 401."""
    who = None if credentials is None else console(request).tokens.principal(
        credentials.credentials)
    if who is None:
        raise HTTPException(401, "a valid bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})
    return who


ConsoleDep = Annotated[Console, Depends(console)]
PrincipalDep = Annotated[str, Depends(principal)]
Filter = Annotated[str | None, Query(max_length=200)]
ApprovalStatus = Literal["pending", "approved", "denied", "timed_out"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "the body is not JSON"},
    401: {"model": ErrorOut, "description": "no or unknown bearer token"},
    403: {"model": ErrorOut, "description": "the principal lacks the role"},
    404: {"model": ErrorOut, "description": "no such run or approval"},
    409: {"model": ErrorOut, "description": "already decided, or nothing to approve"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _ERRORS[404]}

router = APIRouter(prefix="/api", tags=["api"])


@router.get("/runs", response_model=RunListOut)
async def get_runs(console: ConsoleDep, state: Filter = None, outcome: Filter = None,
                   pattern: Filter = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> RunListOut:
    """Runs, newest first, filtered by state, outcome (``result.outcome``) and pattern tag."""
    listing = await list_runs(console.store, state=state, outcome=outcome, pattern=pattern,
                              limit=limit)
    return RunListOut(runs=[RunOut.of(s) for s in listing.runs], matched=listing.matched,
                      states=listing.states, outcomes=listing.outcomes,
                      patterns=listing.patterns)


@router.get("/runs/{run_id}", response_model=RunDetailOut, responses=_NOT_FOUND)
async def get_run(console: ConsoleDep, run_id: str) -> RunDetailOut:
    """One run with its crossings: attempts, proposals, verdicts, effect, human decision."""
    view = await run_view(console.store, run_id)
    if view is None:
        raise NotFoundError(f"no run {run_id!r}")
    return RunDetailOut.of(view)


@router.get("/runs/{run_id}/timeline", response_model=TimelineOut, responses=_NOT_FOUND)
async def get_timeline(console: ConsoleDep, run_id: str) -> TimelineOut:
    """The run's journal as one chronological timeline."""
    view = await run_view(console.store, run_id)
    if view is None:
        raise NotFoundError(f"no run {run_id!r}")
    return TimelineOut.of(view)


@router.get("/approvals", response_model=list[ApprovalOut])
async def get_approvals(console: ConsoleDep,
                        status: ApprovalStatus | None = None) -> list[ApprovalOut]:
    """The approvals inbox (all statuses unless one is asked for)."""
    found = await console.store.list_approvals(status=status)
    return [ApprovalOut.of(a) for a in found]


@router.post("/approvals/{approval_id:path}/decision", response_model=ApprovalOut,
             responses=_ERRORS)
async def post_decision(console: ConsoleDep, who: PrincipalDep, approval_id: str,
                        decision: DecisionIn) -> ApprovalOut:
    """Approve or deny as the token's principal; the run resumes when its worker runs."""
    decided = await console.decide(approval_id, approve=decision.approve, principal=who,
                                   comment=decision.comment)
    return ApprovalOut.of(decided)


@router.post("/kill", response_model=KillOut,
             responses={k: _ERRORS[k] for k in (400, 401, 403, 404)})
async def post_kill(console: ConsoleDep, who: PrincipalDep, kill: KillIn) -> KillOut:
    """The kill switch: stop one run, or every run when ``run_id`` is omitted."""
    if kill.run_id is not None and await console.store.get_run(kill.run_id) is None:
        raise NotFoundError(f"no run {kill.run_id!r}")
    stopped = await console.kill(principal=who, reason=kill.reason, run_id=kill.run_id)
    return KillOut(stopped=stopped, principal=who, scope=kill.run_id or "*")
