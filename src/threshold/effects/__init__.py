"""Effects: side effects run at most once per idempotency key, with the outbox discipline."""

from threshold.effects._context import EffectContext

__all__ = ["EffectContext"]
