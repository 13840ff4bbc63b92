"""Identity and digests. Ids are derived, never drawn from global randomness."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              default=str)
# The C encoder that _CANONICAL.encode builds on every call, built once: half the cost of a
# small document. Without circular-reference markers, a cyclic value raises RecursionError
# instead of ValueError; the text of everything else is the same.
_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode_once = None if _c_encoder is None else _c_encoder(
    None, str, json.encoder.encode_basestring, None, ":", ",", True, False, True)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the form every hash is taken over."""
    if _encode_once is None:
        return _CANONICAL.encode(value)
    return "".join(_encode_once(value, 0))


def digest(value: Any) -> str:
    """A short, stable sha256 digest of a JSON-able value (or of text as given)."""
    text = value if isinstance(value, str) else canonical_json(value)
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
