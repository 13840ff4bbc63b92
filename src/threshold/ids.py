"""Identity and digests. Ids are derived, never drawn from global randomness."""

from __future__ import annotations

import hashlib
import random
from typing import Any

from threshold._json import compact_encoder

_canonical = compact_encoder(sort_keys=True, ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the form every hash is taken over."""
    return _canonical(value)


def digest(value: Any) -> str:
    """A short, stable sha256 digest of a JSON-able value (or of text as given)."""
    text = value if isinstance(value, str) else _canonical(value)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def derive_seed(*parts: object) -> int:
    """A 63-bit seed derived from the parts, so each (run, step, attempt) gets its own."""
    raw = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(raw, "big") >> 1


def idempotency_key(run_id: str, step: int, action: str) -> str:
    """The effect key of DESIGN §2: derived from (run, step, action), stable across retries."""
    return f"{run_id}/{step}/{action}"


class IdFactory:
    """Makes ids from a seed, so a simulation names things the same way every time."""

    def __init__(self, seed: int = 0) -> None:
        self._random = random.Random(seed)

    def new(self, prefix: str) -> str:
        return f"{prefix}-{self._random.getrandbits(64):016x}"
