"""Who is asking: bearer tokens for the API, server-side sessions for the pages.

A token maps to a principal such as ``ann@pricing_lead``; roles come from the principal.
Sessions live in memory (the console is one process bound to localhost): a session id in
an HttpOnly, SameSite=Strict cookie, a CSRF token per session, and a fresh id at login so
a session fixed before login is worth nothing after it.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from threshold.errors import ConfigError

SESSION_COOKIE = "threshold_session"
MAX_SESSIONS = 4096  # anonymous visitors get sessions too: keep the table bounded
SESSION_IDLE_SECONDS = 8 * 3600


def load_tokens(source: Mapping[str, str] | str | Path | None) -> dict[str, str]:
    """Tokens from a mapping or a JSON file ``{"token": "principal"}``; none means nobody
    can authenticate (reading still works)."""
    if source is None:
        return {}
    if isinstance(source, Mapping):
        data: object = dict(source)
        where = "tokens"
    else:
        where = str(source)
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the tokens file {where}: {exc}") from exc
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in data.items()):
        raise ConfigError(f"{where}: expected a JSON object of non-empty token -> principal "
                          "strings")
    short = [v for k, v in data.items() if len(k) < 8]
    if short:
        raise ConfigError(f"{where}: tokens must be at least 8 characters "
                          f"(short token for {', '.join(sorted(short))})")
    return dict(data)


class TokenBook:
    """Token -> principal, compared in constant time against every token."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._tokens = [(t.encode(), p) for t, p in tokens.items()]

    def principal(self, token: str | None) -> str | None:
        if not token:
            return None
        given = token.encode("utf-8", "replace")
        found = None
        for known, principal in self._tokens:
            if hmac.compare_digest(known, given):
                found = principal
        return found

    def from_header(self, authorization: str | None) -> str | None:
        """The principal for an ``Authorization: Bearer <token>`` header, if any."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.principal(token.strip())


@dataclass
class Session:
    session_id: str
    csrf: str
    principal: str | None = None
    seen: float = 0.0
    # One-shot messages for the next page ("approved apr-..."), never taken from the URL.
    flash: list[str] = field(default_factory=list)


class SessionStore:
    """In-memory sessions with idle expiry and a size bound (oldest evicted first)."""

    def __init__(self, *, now: Callable[[], float] = time.monotonic,
                 idle_seconds: float = SESSION_IDLE_SECONDS,
                 max_sessions: int = MAX_SESSIONS) -> None:
        self._now, self._idle, self._max = now, idle_seconds, max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if self._now() - session.seen > self._idle:
            del self._sessions[session_id]
            return None
        session.seen = self._now()
        self._sessions.move_to_end(session_id)
        return session

    def create(self, principal: str | None = None) -> Session:
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), principal,
                          self._now())
        self._sessions[session.session_id] = session
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return session

    def login(self, old: Session | None, principal: str) -> Session:
        """A new session (new id, new CSRF token) for ``principal``; the old one ends."""
        self.end(old)
        return self.create(principal)

    def end(self, session: Session | None) -> None:
        if session is not None:
            self._sessions.pop(session.session_id, None)
