"""The global switch that makes real model calls fail unless a caller opts in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from threshold.errors import RealModelCallBlocked

_allowed = True


def set_model_requests_allowed(allowed: bool) -> None:
    """Test suites call ``set_model_requests_allowed(False)`` once, in a conftest."""
    global _allowed
    _allowed = allowed


@contextmanager
def allow_model_requests(allowed: bool = True) -> Iterator[None]:
    """Opt in (or out) of real model calls for the duration of a block."""
    global _allowed
    previous, _allowed = _allowed, allowed
    try:
        yield
    finally:
        _allowed = previous


def check_model_request_allowed(model: str) -> None:
    """Every real adapter calls this before it touches the network."""
    if not _allowed:
        raise RealModelCallBlocked(model)
