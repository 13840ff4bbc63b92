"""The local SMTP server as a child process: aiosmtpd on 127.0.0.1, recording what it
receives into an SQLite file that its parent reads.

Run as ``python -m threshold.apps.renewal.mailserver --store FILE [--port N]``, or by path as
``LocalMailServer`` in ``mail.py`` starts it, so it imports nothing of threshold. It is a
process of its own so its protocol work runs on another core instead of contending for the
parent's GIL.

Protocol with the parent, one line each way: the child prints ``ready PORT`` once it
listens; each ``sync`` line on stdin makes it write every acknowledged mail to the store and
answer ``synced``; ``stop`` then end of stdin make it write, close and exit. End of stdin
without ``stop`` means the parent died: it exits all the same, so it never outlives its
parent, and removes the store's folder if told to (nobody is left to read it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sqlite3
import sys
import threading
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from typing import Any

from threshold._loop import run as run_async

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
  message_id TEXT PRIMARY KEY, to_addr TEXT, subject TEXT, key TEXT, body TEXT);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
BATCH = 256  # mails held in memory before a write
LINGER_SECONDS = 0.5  # a partial batch is written this long after its first mail
PARENT_CHECK_SECONDS = 1.0

_parser = BytesParser(policy=compat32)  # compat32: no header objects, far cheaper


def _header(message: Message, name: str) -> str:
    value = message.get(name)
    if value is None:
        return ""
    text = str(value)
    return str(make_header(decode_header(text))) if "=?" in text else text


def _plain_body(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain" and not part.is_multipart():
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                return ""
            try:
                text = payload.decode(part.get_content_charset() or "utf-8", "replace")
            except LookupError:  # a charset Python does not know
                text = payload.decode("utf-8", "replace")
            return text.replace("\r\n", "\n")  # as written, before SMTP's CRLF
    return ""


def parse(raw: bytes) -> tuple[str, str, str, str, str]:
    """(Message-ID, To, Subject, X-Idempotency-Key, text body) of one received mail."""
    message = _parser.parsebytes(raw)
    return (_header(message, "Message-ID"), _header(message, "To"),
            _header(message, "Subject"), _header(message, "X-Idempotency-Key"),
            _plain_body(message))


class Recorder:
    """Keeps one copy per Message-ID and counts the duplicates; writes in batches."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")  # a scratch mailbox: no power-loss case
        self.db.executescript(SCHEMA)
        self.loop = loop
        self.seen: set[str] = set()
        self.duplicates = 0
        self.pending: list[tuple[str, str, str, str, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.closed:  # past the last write: refuse rather than acknowledge and lose it
            return "421 shutting down"
        record = parse(envelope.original_content or envelope.content)
        if record[0] in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(record[0])
            self.pending.append(record)
        if len(self.pending) >= BATCH:
            self.flush()
        elif self._timer is None:
            self._timer = self.loop.call_later(LINGER_SECONDS, self.flush)
        return "250 OK"  # held in memory; every way out of this process writes it first

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?)",
                                self.pending)
            self.db.execute("INSERT OR REPLACE INTO counters VALUES ('duplicates', ?)",
                            (self.duplicates,))
        self.pending.clear()


async def serve(host: str, port: int, store: str) -> bool:
    """Serve until the parent stops us (True) or is gone (False)."""
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    recorder = Recorder(store, loop)
    server = await loop.create_server(
        lambda: SMTP(recorder, hostname="threshold.local", loop=loop), host, port)
    done = asyncio.Event()
    stopped: list[bool] = []

    def sync() -> None:
        recorder.flush()
        _say("synced")

    def commands() -> None:
        # A thread, not the loop's reader: that works for any stdin (pipe, file, tty).
        for line in sys.stdin.buffer:
            if line.strip() == b"sync":
                loop.call_soon_threadsafe(sync)
            elif line.strip() == b"stop":
                stopped.append(True)
        loop.call_soon_threadsafe(done.set)  # end of stdin: the parent stopped us or died

    async def orphaned(parent: int) -> None:
        # Belt and braces: a forked sibling could hold our stdin open after the parent died.
        while os.getppid() == parent:
            await asyncio.sleep(PARENT_CHECK_SECONDS)
        done.set()

    threading.Thread(target=commands, daemon=True).start()
    watcher = asyncio.create_task(orphaned(os.getppid()))
    _say(f"ready {server.sockets[0].getsockname()[1]}")
    await done.wait()
    server.close()
    recorder.flush()
    recorder.closed = True
    recorder.db.close()
    watcher.cancel()
    return bool(stopped)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="threshold.apps.renewal.mailserver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--store", required=True, help="SQLite file to record mail into")
    parser.add_argument("--remove-if-orphaned", action="store_true",
                        help="remove the store's folder when the parent dies")
    args = parser.parse_args(argv)
    # Ctrl-C reaches the whole process group: let the parent stop us, after it has read.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # On the command line's loop: uvloop made the portfolio ~5 % faster than asyncio's
    # here, the agent's process waiting less on each mail's four round trips.
    if not run_async(serve(args.host, args.port, args.store)) and args.remove_if_orphaned:
        shutil.rmtree(os.path.dirname(os.path.abspath(args.store)), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
