"""Mail over real SMTP: the async client, and the local aiosmtpd server in its own process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from email.mime.text import MIMEText
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

from threshold.apps.renewal.mail import (
    SENDER,
    LocalMailServer,
    Mailer,
    message_id_for,
    render_message,
)


def _alive(pid: int) -> bool:
    """Running, not merely a zombie no one has reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def test_mail_reaches_a_server_process_with_its_headers_and_body() -> None:
    """Mails sent to the server in a child process arrive with To, Subject, the key-derived
    Message-ID, X-Idempotency-Key and body, non-ASCII text included, readable while it runs."""
    mails = [("renewal-0001-A/4/pricing.commit", "0001-a@customers.example",
              "Your renewal: 20% off for 12 months", "Dear customer,\n\nReply to accept.\n"),
             ("renewal-0002-B/9/mail.reminder", "0002-b@customers.example",
              "Rappel : votre offre — 15 %", "Votre offre vous attend, déjà.\n.\nFin.\n")]

    async def send(mailer: Mailer) -> list[str]:
        try:
            return [await mailer.send(*mail) for mail in mails]
        finally:
            await mailer.close()

    with LocalMailServer() as server:
        assert server.pid is not None and server.pid != os.getpid() and _alive(server.pid)
        ids = asyncio.run(send(Mailer(server.host, server.port)))
        received = dict(server.mailbox.messages)
    assert ids == [message_id_for(key) for key, *_ in mails]
    assert received == {message_id_for(key): {"to": to, "subject": subject, "key": key,
                                              "body": body}
                        for key, to, subject, body in mails}


def test_duplicates_by_message_id_are_kept_once_and_counted() -> None:
    """The same effect key sent three times (twice at once) is one message, two duplicates."""

    async def send(mailer: Mailer) -> None:
        await mailer.send("r/1/offer", "a@customers.example", "Offer", "once\n")
        await asyncio.gather(*(mailer.send("r/1/offer", "a@customers.example", "Offer",
                                           "again\n") for _ in range(2)))
        await mailer.send("r/2/offer", "b@customers.example", "Offer", "other\n")
        await mailer.close()

    with LocalMailServer() as server:
        asyncio.run(send(Mailer(server.host, server.port)))
        assert server.mailbox.duplicates == 2
        assert sorted(server.mailbox.messages) == [message_id_for("r/1/offer"),
                                                   message_id_for("r/2/offer")]
        assert server.mailbox.messages[message_id_for("r/1/offer")]["body"] == "once\n"


def test_stop_keeps_every_mail_the_server_acknowledged() -> None:
    """Mails acknowledged but not yet written out by the server are in the mailbox after
    stop(), though nobody looked at the mailbox before."""
    server = LocalMailServer().start()

    async def send(mailer: Mailer) -> None:
        await asyncio.gather(*(mailer.send(f"r/{i}/offer", "a@customers.example", "Offer",
                                           f"mail {i}\n") for i in range(40)))
        await mailer.close()

    asyncio.run(send(Mailer(server.host, server.port)))
    pid = server.pid
    server.stop()
    assert pid is not None and not _alive(pid)
    assert len(server.mailbox.messages) == 40
    assert server.mailbox.messages[message_id_for("r/7/offer")]["body"] == "mail 7\n"


def test_mailer_reconnects_after_the_server_drops_its_connection() -> None:
    """A pooled connection whose server went away is replaced and the mail sent again, to
    the server now listening on that port."""

    async def scenario() -> tuple[Mailer, LocalMailServer, LocalMailServer]:
        first = LocalMailServer().start()
        mailer = Mailer(first.host, first.port, connections=1)
        await mailer.send("r/1/offer", "a@customers.example", "First", "1\n")
        # Blocking here keeps the loop from noticing the drop: the next send finds a
        # connection that looks open and fails on it.
        first.stop()
        second = LocalMailServer(port=first.port).start()
        await mailer.send("r/2/offer", "a@customers.example", "Second", "2\n")
        await mailer.close()
        return mailer, first, second

    mailer, first, second = asyncio.run(scenario())
    try:
        assert mailer.resent == 1 and mailer.sent == 2
        assert list(first.mailbox.messages) == [message_id_for("r/1/offer")]
        assert list(second.mailbox.messages) == [message_id_for("r/2/offer")]
    finally:
        second.stop()


PARENT = """
from threshold.apps.renewal.mail import LocalMailServer
server = LocalMailServer().start()
print(server.pid, server.store.parent, flush=True)
import time
time.sleep(120)
"""


def test_server_process_exits_when_its_parent_is_killed() -> None:
    """SIGKILL of the process that started the server leaves no orphan server behind, nor
    its scratch folder."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout is not None
        pid, folder = parent.stdout.readline().split()
        child = int(pid)
        assert _alive(child) and Path(folder).is_dir()
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _gone_within(child, 15.0)
        assert not Path(folder).exists()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_rendered_message_is_what_mimetext_writes_and_parses_back() -> None:
    """The hand-built common case is byte for byte compat32 MIMEText; the non-ASCII case
    (MIMEText itself) parses back to the same headers and body."""
    key, to, subject, body = "renewal-1/3/offer", "x@customers.example", "Your renewal", "Hi\n"
    reference = MIMEText(body, "plain", "us-ascii")
    for name, value in (("From", SENDER), ("To", to), ("Subject", subject),
                        ("Message-ID", message_id_for(key)), ("X-Idempotency-Key", key)):
        reference[name] = value
    assert render_message(SENDER, to, subject, body, key) == reference.as_bytes()

    raw = render_message(SENDER, to, "Réponse — 10 %", "Merci, à bientôt.\n", key)
    parsed = BytesParser(policy=default_policy).parsebytes(raw)
    assert raw.isascii()
    assert (str(parsed["Subject"]), str(parsed["Message-ID"]), str(parsed["X-Idempotency-Key"])
            ) == ("Réponse — 10 %", message_id_for(key), key)
    content = parsed.get_body(("plain",))
    assert content is not None and content.get_content() == "Merci, à bientôt.\n"
