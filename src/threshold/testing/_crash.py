"""Crash injection at the runtime's named windows, for crash-equivalence tests."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from threshold.errors import ConfigError, CrashInjected

CRASH_WINDOWS = ("after_propose", "after_verdict", "after_transport_error", "after_effect",
                 "after_record")


@dataclass
class CrashPlan:
    """Crash at the ``nth`` time the runtime passes ``window``.

    ``mode="exit"`` ends the process with ``os._exit`` (no cleanup, no flush: a real crash);
    ``mode="raise"`` raises ``CrashInjected`` for in-process tests."""

    window: str
    nth: int = 1
    mode: Literal["exit", "raise"] = "exit"
    exit_code: int = 137
    seen: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.window not in CRASH_WINDOWS:
            raise ConfigError(f"unknown crash window {self.window!r}; one of {CRASH_WINDOWS}")

    def __call__(self, window: str) -> None:
        self.seen[window] += 1
        if window == self.window and self.seen[window] == self.nth:
            if self.mode == "exit":
                os._exit(self.exit_code)
            raise CrashInjected(window)

    @classmethod
    def parse(cls, spec: str, *, mode: Literal["exit", "raise"] = "exit") -> CrashPlan:
        """``after_effect:3`` crashes at the third effect."""
        window, _, nth = spec.partition(":")
        return cls(window, int(nth or 1), mode)
