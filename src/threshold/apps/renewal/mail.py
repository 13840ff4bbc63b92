"""Email over real SMTP, and the local SMTP server used by the demo and the tests.

The Message-ID of every mail is derived from its effect's idempotency key, so a mail sent
again after a crash is recognisable downstream; the local server keeps one copy per id and
counts the duplicates it was offered.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

SENDER = "renewals@threshold.example"


def message_id_for(key: str) -> str:
    return f"<{key.replace('/', '.')}@threshold.example>"


class Mailer:
    """An SMTP client that keeps one connection open and reconnects when it drops."""

    def __init__(self, host: str, port: int, *, sender: str = SENDER, timeout: float = 10.0):
        self.host, self.port, self.sender, self.timeout = host, port, sender, timeout
        self._smtp: smtplib.SMTP | None = None
        self._lock = threading.Lock()
        self.sent = 0

    def send(self, key: str, to: str, subject: str, body: str) -> str:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, to, subject
        message["Message-ID"] = message_id_for(key)
        message["X-Idempotency-Key"] = key
        message.set_content(body)
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._smtp is None:
                        self._smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
                    self._smtp.send_message(message)
                    break
                except (smtplib.SMTPServerDisconnected, ConnectionError, OSError):
                    self._smtp = None
                    if attempt == 2:
                        raise
        self.sent += 1
        return str(message["Message-ID"])

    def close(self) -> None:
        with self._lock:
            if self._smtp is not None:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    self._smtp.quit()
                self._smtp = None


@dataclass
class Mailbox:
    """What the local server received: one message per Message-ID, duplicates counted."""

    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, raw: bytes) -> None:
        parsed = BytesParser(policy=default_policy).parsebytes(raw)
        message_id = str(parsed["Message-ID"])
        body = parsed.get_body(("plain",))
        with self.lock:
            if message_id in self.messages:
                self.duplicates += 1
                return
            self.messages[message_id] = {
                "to": str(parsed["To"]), "subject": str(parsed["Subject"]),
                "key": str(parsed["X-Idempotency-Key"]),
                "body": "" if body is None else body.get_content(),
            }


class LocalMailServer:
    """An aiosmtpd server on 127.0.0.1 (a free port unless one is given)."""

    def __init__(self, port: int = 0) -> None:
        self.mailbox = Mailbox()
        self.host = "127.0.0.1"
        self.port = port or _free_port()
        self._controller: Any = None

    def start(self) -> LocalMailServer:
        try:
            from aiosmtpd.controller import Controller
        except ModuleNotFoundError as exc:  # pragma: no cover - aiosmtpd is a dependency
            from threshold.errors import MissingExtraError

            raise MissingExtraError("mail", "aiosmtpd") from exc
        mailbox = self.mailbox

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                mailbox.add(envelope.original_content or envelope.content)
                return "250 OK"

        self._controller = Controller(Handler(), hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> LocalMailServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
