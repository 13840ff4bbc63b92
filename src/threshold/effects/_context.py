"""What an effect is told about itself: above all its key, so an external system can dedupe."""

from __future__ import annotations

from datetime import datetime

from threshold._record import record


@record
class EffectContext:
    """Passed to every commit. ``key`` is stable across crashes and retries of the same step;
    ``performed`` counts earlier attempts whose result was never recorded (crash windows)."""

    key: str
    run_id: str
    step: int
    action: str
    now: datetime
    performed: int = 0
