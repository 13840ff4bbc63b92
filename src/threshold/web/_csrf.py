"""CSRF protection for the page forms: every POST carries the session's token in a hidden
field, and a cross-site ``Origin`` is refused outright. (The JSON API authenticates with a
bearer header, never a cookie, so a forged cross-site request has nothing to ride on.)"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from threshold.web._auth import Session

FIELD = "csrf_token"


def verify(request: Request, session: Session | None, submitted: str | None) -> None:
    """Raise 403 unless ``submitted`` is this session's token and the origin is ours."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "cross-origin form post refused")
    if session is None or not submitted or not hmac.compare_digest(
            session.csrf.encode(), submitted.encode("utf-8", "replace")):
        raise HTTPException(403, "the form's CSRF token is missing or wrong; reload the page "
                                 "and try again")
