"""The web console over a real SQLite store: auth, roles, CSRF, escaping, read-only GETs,
the kill switch, filters, reports, and ``threshold ui`` as a real process."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from threshold.patterns.policy import load_policy  # noqa: E402
from threshold.store import EventRecord, open_store  # noqa: E402
from threshold.web import create_app  # noqa: E402
from threshold.web._queries import derive_patterns  # noqa: E402
from web_support import (  # noqa: E402
    ADA,
    ANN,
    BOB,
    POLICY,
    TOKENS,
    VIC,
    XSS,
    bearer,
    resume,
    run,
    seed,
    snapshot,
)

APPROVAL = "apr-demo-45/1"


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'console.db'}"
    run(seed(url, committed="demo-10", xss="xss-1",
             journal={"j-saga": ["saga.step"], "j-topic": ["consumed"],
                      "j-state": ["state.transition"]}))
    return url


def client(url: str, **kwargs: Any) -> TestClient:
    return TestClient(create_app(open_store(url), tokens=TOKENS, **kwargs),
                      base_url="http://127.0.0.1")


def login(c: TestClient, token: str) -> None:
    page = c.get("/login")
    csrf = _csrf(page.text)
    done = c.post("/login", data={"token": token, "csrf_token": csrf, "next": "/approvals"},
                  follow_redirects=False)
    assert done.status_code == 303, done.text


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "page has no CSRF field"
    return found.group(1)


async def _approval(url: str, approval_id: str = APPROVAL) -> Any:
    store = open_store(url)
    try:
        return await store.get_approval(approval_id)
    finally:
        await store.close()


async def _run_record(url: str, run_id: str) -> Any:
    store = open_store(url)
    try:
        return await store.get_run(run_id)
    finally:
        await store.close()


async def _events(url: str, kind: str) -> list[EventRecord]:
    store = open_store(url)
    try:
        return await store.list_events(kind=kind)
    finally:
        await store.close()


# --- authentication and roles ------------------------------------------------------------


def test_api_decision_needs_a_bearer_token(url: str) -> None:
    """Deciding without a token, or with an unknown one, is 401 and leaves it pending."""
    c = client(url)
    for headers in ({}, bearer("not-a-real-token"), {"Authorization": f"Basic {ANN}"}):
        r = c.post(f"/api/approvals/{APPROVAL}/decision", json={"approve": True},
                   headers=headers)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == "Bearer"
    assert run(_approval(url)).status == "pending"


def test_api_decision_refuses_a_principal_without_the_role(url: str) -> None:
    """An authenticated principal lacking the approval's role gets 403, journaled, pending."""
    r = client(url).post(f"/api/approvals/{APPROVAL}/decision",
                         json={"approve": True, "comment": "sure"}, headers=bearer(BOB))
    assert r.status_code == 403, r.text
    assert "bob@support" in r.json()["detail"]
    assert run(_approval(url)).status == "pending"
    refused = run(_events(url, "approval.refused"))
    assert [e.data["principal"] for e in refused] == ["bob@support"]


def test_api_approval_resumes_the_run_with_the_human_verdict(url: str) -> None:
    """ann@pricing_lead approves via the API; the worker then commits the 45 % quote with a
    human verdict carrying her comment; a second decision is a 409 conflict."""
    c = client(url)
    r = c.post(f"/api/approvals/{APPROVAL}/decision",
               json={"approve": True, "comment": "loyal customer"}, headers=bearer(ANN))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved" and r.json()["decided_by"] == "ann@pricing_lead"
    again = c.post(f"/api/approvals/{APPROVAL}/decision", json={"approve": False},
                   headers=bearer(ANN))
    assert again.status_code == 409
    run(resume(url))
    detail = client(url).get("/api/runs/demo-45").json()
    assert detail["status"] == "completed" and detail["outcome"] == "committed"
    human = detail["crossings"][0]["human"]
    assert [(h["verdict"], h["decided_by"], h["message"]) for h in human] == [
        ("accept", "ann@pricing_lead", "loyal customer")]


def test_api_unknown_approval_is_404(url: str) -> None:
    """Deciding an approval that does not exist is a 404, not a server error."""
    r = client(url).post("/api/approvals/apr-nope/1/decision", json={"approve": True},
                         headers=bearer(ANN))
    assert r.status_code == 404


# --- the kill switch ---------------------------------------------------------------------


def test_kill_switch_api_follows_the_policy(url: str) -> None:
    """With the renewal policy, bob (no listed role) and even an admin are refused with 403
    and the run keeps waiting; vic@vp_engineering (listed) stops it. Refusals are journaled."""
    c = client(url, policy=load_policy(POLICY))
    for token in (BOB, ADA):
        r = c.post("/api/kill", json={"run_id": "demo-45", "reason": "test"},
                   headers=bearer(token))
        assert r.status_code == 403, r.text
    assert run(_run_record(url, "demo-45")).status == "waiting"
    assert c.post("/api/kill", json={"run_id": "demo-45", "reason": "x"}).status_code == 401
    r = c.post("/api/kill", json={"run_id": "demo-45", "reason": "runaway discounts"},
               headers=bearer(VIC))
    assert r.status_code == 200, r.text
    assert r.json() == {"stopped": 1, "principal": "vic@vp_engineering", "scope": "demo-45"}
    assert run(_run_record(url, "demo-45")).status == "killed"
    uses = [(e.data["principal"], e.data["allowed"]) for e in run(_events(url, "kill_switch"))]
    assert uses == [("bob@support", False), ("ada@admin", False),
                    ("vic@vp_engineering", True)]


def test_kill_switch_without_policy_needs_admin(url: str) -> None:
    """Without a policy file the runtime's rule holds: only the admin role may kill."""
    c = client(url)
    assert c.post("/api/kill", json={"reason": "all"}, headers=bearer(ANN)).status_code == 403
    r = c.post("/api/kill", json={"reason": "stop everything"}, headers=bearer(ADA))
    assert r.status_code == 200 and r.json()["stopped"] == 2  # the two waiting runs
    assert run(_run_record(url, "xss-1")).status == "killed"


def test_kill_form_on_the_run_page(url: str) -> None:
    """A logged-in authorized principal stops a run from its page (form with CSRF token)."""
    c = client(url, policy=load_policy(POLICY))
    login(c, VIC)
    page = c.get("/runs/demo-45")
    r = c.post("/runs/demo-45/kill", data={"reason": "drill", "csrf_token": _csrf(page.text)},
               follow_redirects=False)
    assert r.status_code == 303
    assert run(_run_record(url, "demo-45")).status == "killed"


# --- CSRF and sessions -------------------------------------------------------------------


def test_forms_refuse_a_missing_wrong_or_cross_site_csrf_token(url: str) -> None:
    """Form POSTs without the session's CSRF token, with another one, or from another
    origin are 403 and change nothing, even for a logged-in principal with the role."""
    c = client(url)
    assert c.post("/login", data={"token": ANN}).status_code == 403
    login(c, ANN)
    good = _csrf(c.get("/approvals").text)
    form = {"decision": "approve", "comment": "x"}
    path = f"/approvals/{APPROVAL}/decide"
    assert c.post(path, data=form).status_code == 403
    assert c.post(path, data={**form, "csrf_token": "forged"}).status_code == 403
    assert c.post(path, data={**form, "csrf_token": good},
                  headers={"Origin": "http://evil.example"}).status_code == 403
    other = client(url)  # a second browser: its own session, its own token
    assert other.post(path, data={**form, "csrf_token": good}).status_code == 403
    assert run(_approval(url)).status == "pending"


def test_login_cookie_is_strict_httponly_and_rotated(url: str) -> None:
    """The session cookie is HttpOnly and SameSite=Strict, and login issues a new session
    id and CSRF token (a session fixed before login is worthless after it)."""
    c = client(url)
    first = c.get("/login")
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    before, csrf_before = c.cookies.get("threshold_session"), _csrf(first.text)
    r = c.post("/login", data={"token": ANN, "csrf_token": csrf_before},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/approvals"
    assert c.cookies.get("threshold_session") != before
    assert _csrf(c.get("/approvals").text) != csrf_before
    bad = client(url)
    page = bad.get("/login")
    r = bad.post("/login", data={"token": "wrong-token", "csrf_token": _csrf(page.text)})
    assert r.status_code == 401 and "unknown token" in r.text


def test_login_redirect_stays_on_this_site(url: str) -> None:
    """``next`` pointing at another site is ignored (no open redirect)."""
    c = client(url)
    csrf = _csrf(c.get("/login").text)
    r = c.post("/login", data={"token": ANN, "csrf_token": csrf,
                               "next": "//evil.example/x"}, follow_redirects=False)
    assert r.headers["location"] == "/approvals"


def test_page_decision_needs_login_then_resumes_the_run(url: str) -> None:
    """An anonymous form POST (with a valid CSRF token) is 401; after login the same form
    approves, and the run completes with the comment once the worker runs."""
    c = client(url)
    page = c.get("/approvals")
    assert "log in" in page.text and "Approve</button>" not in page.text
    path = f"/approvals/{APPROVAL}/decide"
    r = c.post(path, data={"decision": "approve", "csrf_token": _csrf(c.get("/login").text)})
    assert r.status_code == 401
    login(c, ANN)
    page = c.get("/approvals")
    r = c.post(path, data={"decision": "approve", "comment": "ok by ann",
                           "csrf_token": _csrf(page.text)}, follow_redirects=False)
    assert r.status_code == 303
    assert "approved by ann@pricing_lead" in c.get("/approvals").text
    run(resume(url))
    html = c.get("/runs/demo-45").text
    assert 'id="run-status">completed<' in html and "ok by ann" in html


def test_page_decision_refuses_a_principal_without_the_role(url: str) -> None:
    """bob logs in fine but deciding a pricing_lead approval from the page is 403."""
    c = client(url)
    login(c, BOB)
    page = c.get("/approvals")
    r = c.post(f"/approvals/{APPROVAL}/decide",
               data={"decision": "deny", "csrf_token": _csrf(page.text)})
    assert r.status_code == 403 and "bob@support" in r.text
    assert run(_approval(url)).status == "pending"


# --- GET never mutates --------------------------------------------------------------------


GET_PATHS = ("/", "/runs", "/runs/demo-45", "/runs/xss-1", "/approvals", "/reports",
             "/reports?name=x.json", "/diagnose", "/login", "/openapi.json",
             "/static/console.css", "/api/runs", "/api/runs/demo-45",
             "/api/runs/demo-45/timeline", "/api/approvals", "/api/approvals?status=pending")


def test_get_requests_never_change_the_store(url: str) -> None:
    """Every GET route, even with a token and a session, leaves the journal as it was;
    the mutating URLs answer GET with 405."""
    before = run(snapshot(url))
    c = client(url)
    login(c, ADA)
    api_gets = {p for p, ops in c.get("/openapi.json").json()["paths"].items() if "get" in ops}
    assert api_gets == {"/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/timeline",
                        "/api/approvals"}  # a new GET route must be added to GET_PATHS
    for path in [*GET_PATHS, "/runs?state=waiting", "/diagnose?run_id=demo-45"]:
        assert c.get(path, headers=bearer(ADA)).status_code < 500, path
    for path in ("/api/kill", f"/api/approvals/{APPROVAL}/decision",
                 f"/approvals/{APPROVAL}/decide", "/runs/demo-45/kill", "/logout"):
        assert c.get(path, headers=bearer(ADA)).status_code in (404, 405), path
    assert run(snapshot(url)) == before


# --- escaping and headers ----------------------------------------------------------------


def test_markup_in_a_proposal_renders_inert(url: str) -> None:
    """A proposal whose text is ``<script>alert(1)</script>`` appears escaped on the run
    page and in the inbox: no live tag, the text shown as text."""
    c = client(url)
    for path in ("/runs/xss-1", "/approvals", "/runs?state=waiting"):
        html = c.get(path).text
        assert "<script>alert" not in html and "<img src=x" not in html, path
    for path in ("/runs/xss-1", "/approvals"):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in c.get(path).text
    api = c.get("/api/runs/xss-1")
    assert api.headers["content-type"] == "application/json"
    assert api.json()["crossings"][0]["attempts"][0]["value"]["headline"] == XSS


def test_security_headers_on_every_kind_of_response(url: str) -> None:
    """Pages, API, static files and errors carry CSP default-src 'self' with
    frame-ancestors 'none', nosniff and no-store."""
    c = client(url)
    for path in ("/runs", "/api/runs", "/static/console.css", "/missing", "/api/runs/nope"):
        h = c.get(path).headers
        csp = h["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"


def test_allowed_hosts_refuse_a_rebound_host(url: str) -> None:
    """With ``allowed_hosts`` a request for another Host name (DNS rebinding) is refused."""
    c = client(url, allowed_hosts=["127.0.0.1", "localhost"])
    assert c.get("/runs").status_code == 200
    assert c.get("/runs", headers={"Host": "evil.example"}).status_code == 400


# --- runs, filters, timeline -------------------------------------------------------------


def test_derive_patterns_from_the_journal() -> None:
    """Event kinds, topics, approvals and a state row map to the pattern tags."""
    def ev(kind: str, **data: Any) -> EventRecord:
        return EventRecord("r", kind, data, "2026-01-01T00:00:00")

    assert derive_patterns([], approvals=0, has_state=False) == ()
    assert derive_patterns([ev("saga.step"), ev("fanout.vote")], approvals=0,
                           has_state=False) == ("P2",)
    assert derive_patterns([ev("delegation.merged"), ev("gate.warn"), ev("x", topic="t")],
                           approvals=1, has_state=True) == ("P1", "P3", "P4", "P5", "P6")


def test_runs_filter_by_state_outcome_and_pattern(url: str) -> None:
    """The list filters by status, result.outcome and derived pattern, API and page alike."""
    c = client(url)

    def ids(**params: str) -> set[str]:
        return {r["run_id"] for r in c.get("/api/runs", params=params).json()["runs"]}

    assert ids() == {"demo-45", "demo-10", "xss-1", "j-saga", "j-topic", "j-state"}
    assert ids(state="waiting") == {"demo-45", "xss-1"}
    assert ids(outcome="committed") == {"demo-10"}
    assert ids(outcome="noted", pattern="P2") == {"j-saga"}
    assert ids(pattern="P3") == {"j-topic"} and ids(pattern="P5") == {"j-state"}
    assert ids(pattern="P6") == {"demo-45", "xss-1"}
    listing = c.get("/api/runs").json()
    assert listing["states"] == {"completed": 4, "waiting": 2}
    html = c.get("/runs", params={"pattern": "P6"}).text
    assert "demo-45" in html and "j-saga" not in html and "2 run(s) match" in html


def test_run_page_shows_attempts_verdicts_and_approval(url: str) -> None:
    """The run page shows the proposal, each verifier's verdict and the pending approval;
    the timeline API lists the proposal and the escalation in time order."""
    c = client(url)
    html = c.get("/runs/demo-45").text
    assert "discount_cap@1: <strong>reject</strong> [policy.discount_cap]" in html
    assert "apr-demo-45/1</code>: pending (role pricing_lead" in html
    kinds = [e["kind"] for e in c.get("/api/runs/demo-45/timeline").json()["entries"]]
    assert kinds.index("proposal") < kinds.index("escalated")
    assert c.get("/runs/nope").status_code == 404
    assert c.get("/api/runs/nope/timeline").status_code == 404


# --- reports and diagnose ----------------------------------------------------------------


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
            chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


def test_reports_page_renders_json_markdown_and_png(url: str, tmp_path: Path) -> None:
    """JSON is pretty-printed, Markdown shown as escaped text, a PNG inline via a same-site
    URL; names outside the listing (traversal) are 404."""
    reports = tmp_path / "reports"
    (reports / "plots").mkdir(parents=True)
    (reports / "divergence.json").write_text(json.dumps({"rate": 0.25, "runs": 4}))
    (reports / "diagnose.md").write_text("# Findings\n<script>alert(1)</script>\n")
    (reports / "plots" / "reliability.png").write_bytes(_png())
    (tmp_path / "secret.json").write_text("{}")
    c = client(url, reports_dir=reports)
    listing = c.get("/reports").text
    assert all(n in listing for n in ("divergence.json", "diagnose.md", "plots/reliability.png"))
    shown = c.get("/reports", params={"name": "divergence.json"}).text
    assert '&#34;rate&#34;: 0.25' in shown  # pretty-printed, quotes escaped
    md = c.get("/reports", params={"name": "diagnose.md"}).text
    assert "# Findings" in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "<script>alert" not in md
    png = c.get("/reports", params={"name": "plots/reliability.png"}).text
    assert '<img src="/reports/file?name=plots%2Freliability.png"' in png
    raw = c.get("/reports/file", params={"name": "plots/reliability.png"})
    assert raw.status_code == 200 and raw.content == _png()
    assert raw.headers["content-type"] == "image/png"
    for name in ("../secret.json", "/etc/passwd", "plots/../../secret.json"):
        assert c.get("/reports/file", params={"name": name}).status_code == 404


def test_diagnose_panel_runs_diagnose_or_says_not_available(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The panel shows ``diagnose``'s findings for the store when the module is there, and
    says "not available" when it is not."""
    from threshold.web import _reports

    c = client(url)
    if _reports.diagnose_function() is not None:
        assert "diagnosis of" in c.get("/diagnose").text
    monkeypatch.setattr(_reports, "diagnose_function", lambda: None)
    page = c.get("/diagnose")
    assert page.status_code == 200 and "not available" in page.text


# --- threshold ui ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_threshold_ui_serves_the_console_on_loopback(url: str, tmp_path: Path) -> None:
    """``threshold ui`` (a real process) binds 127.0.0.1, serves the runs page and the API
    with the tokens file, and refuses a foreign Host header."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from threshold.cli import main; raise SystemExit(main())",
         "ui", "--db", url, "--port", str(port), "--tokens", str(tokens),
         "--policy", str(POLICY)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(
            Path(__file__).parents[1] / "src")})
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"{base}/runs", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "threshold ui did not start"
                time.sleep(0.2)
        assert r.status_code == 200 and "demo-45" in r.text
        r = httpx.post(f"{base}/api/kill", json={"run_id": "demo-45", "reason": "x"},
                       headers=bearer(ANN))
        assert r.status_code == 403  # the policy file's list does not name pricing leads
        assert httpx.get(f"{base}/runs", headers={"Host": "evil.example"}).status_code == 400
    finally:
        proc.terminate()
        proc.wait(timeout=20)
