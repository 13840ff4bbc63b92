"""What an effect is told about itself: above all its key, so an external system can dedupe."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class EffectContext:
    """Passed to every commit. ``key`` is stable across crashes and retries of the same step;
    ``performed`` counts earlier attempts whose result was never recorded (crash windows)."""

    key: str
    run_id: str
    step: int
    action: str
    now: datetime
    performed: int = 0
