"""Injected time. Runtime code asks a ``Clock``; it never reads the wall clock itself."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Business time for runs, timers and journal stamps."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Return once ``now() >= when`` (a virtual clock jumps there at once)."""
        ...


class SystemClock:
    """Real time, for production."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        delay = (when - self.now()).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)

    def monotonic(self) -> float:
        return time.monotonic()


DEFAULT_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class VirtualClock:
    """Simulated time: jumps instead of waiting, so 90 days pass in milliseconds."""

    def __init__(self, start: datetime = DEFAULT_EPOCH) -> None:
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self._now = start

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        self.advance_to(when)
        await asyncio.sleep(0)

    def advance_to(self, when: datetime) -> None:
        """Move forward to ``when``; never backward."""
        if when > self._now:
            self._now = when

    def advance(self, **delta: float) -> datetime:
        """``advance(days=30)``: move forward by a ``timedelta``'s keyword arguments."""
        self._now += timedelta(**delta)
        return self._now


_last_iso: tuple[datetime, str] | None = None


def to_iso(moment: datetime) -> str:
    """The journal's time format: ISO 8601, UTC, microseconds."""
    global _last_iso
    # A virtual clock hands out one instant for a whole burst of journal writes.
    last = _last_iso
    if last is not None and last[0] is moment:
        return last[1]
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    _last_iso = (moment, text)
    return text


def from_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)
