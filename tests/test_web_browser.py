"""The console in a real browser: Debian's Chromium, headless, driven by Playwright, against
uvicorn serving the app on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support import require
from threshold.store import open_store
from web_support import ANN, TOKENS, resume, run, seed

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parents[1] / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(url: str) -> Iterator[str]:
    """The console on 127.0.0.1 and a free port, in a background thread."""
    import uvicorn

    from threshold.web import create_app

    store = open_store(url)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(
        create_app(store, tokens=TOKENS, allowed_hosts=["127.0.0.1"]), host="127.0.0.1",
        port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        run(store.close())


@pytest.mark.browser
def test_approve_in_the_browser_and_the_run_resumes(tmp_path: Path) -> None:
    """A human logs in, approves the escalated 45 % quote with a comment in the inbox; after
    the worker runs, the run page shows it completed with the human verdict and comment.
    A proposal full of markup on the same pages fires no dialog and breaks no CSP rule."""
    require(importlib.util.find_spec("playwright") is not None, "playwright is not installed")
    require(shutil.which(CHROMIUM) is not None, f"{CHROMIUM} is missing (apt-get install "
                                                "chromium)")
    from playwright.sync_api import ConsoleMessage, Dialog, sync_playwright

    url = f"sqlite:///{tmp_path / 'browser.db'}"
    run(seed(url, xss="xss-1"))
    ARTIFACTS.mkdir(exist_ok=True)
    comment = "Loyal customer for 30 months: 45% approved once"
    dialogs: list[str] = []
    console_errors: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            console_errors.append(message.text)

    with serve(url) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("dialog", on_dialog)
            page.on("console", on_console)

            page.goto(f"{base}/approvals")
            assert page.locator("section.approval").count() == 2
            assert page.locator("script").count() == 0  # the markup stayed text
            assert page.locator("img[src=x]").count() == 0
            assert "<script>alert(1)</script>" in page.locator("main").inner_text()

            page.get_by_role("link", name="Log in").first.click()
            page.fill("input[name=token]", ANN)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{base}/approvals")
            assert "logged in as ann@pricing_lead" in page.locator(".flash").inner_text()

            card = page.locator("section.approval", has_text="apr-demo-45/1")
            card.locator("textarea[name=comment]").fill(comment)
            card.get_by_role("button", name="Approve").click()
            page.wait_for_url(f"{base}/approvals")
            assert "apr-demo-45/1: approved by ann@pricing_lead" in page.locator(
                ".flash").inner_text()
            page.screenshot(path=str(ARTIFACTS / "console-inbox.png"), full_page=True)

            # The worker picks the decision up. Playwright's sync API holds this thread's
            # event loop, so the worker runs its own in another thread.
            worker = threading.Thread(target=run, args=(resume(url),))
            worker.start()
            worker.join(timeout=60)

            page.goto(f"{base}/runs/demo-45")
            assert page.locator("#run-status").inner_text() == "completed"
            assert page.locator("#run-outcome").inner_text() == "committed"
            human = page.locator(".human").inner_text()
            assert "accept" in human and "ann@pricing_lead" in human and comment in human
            page.screenshot(path=str(ARTIFACTS / "console-run.png"), full_page=True)

            page.goto(f"{base}/runs/xss-1")
            assert page.locator("script").count() == 0
            assert "<script>alert(1)</script>" in page.locator(".proposal").inner_text()
            page.wait_for_timeout(300)  # give a would-be handler the chance to fire
        finally:
            browser.close()
    assert dialogs == []
    assert [e for e in console_errors if "Content Security Policy" in e] == []
    assert (ARTIFACTS / "console-run.png").stat().st_size > 10_000
