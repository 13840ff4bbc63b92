"""Who may process a consumer's next batch: one live instance per (topic, consumer).

The lease lives in the consumer's offset record, so taking it, extending it and committing
the offset are the same compare-and-swap. A lease frees when it expires (real time) or,
on this host, as soon as the process that held it is gone.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime

from threshold.clock import from_iso


def owner_id(instance: object) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{id(instance):x}"


def lease_free(owner: str | None, lease_until: str | None, me: str, now: datetime) -> bool:
    if owner is None or owner == me:
        return True
    if lease_until is None or from_iso(lease_until) <= now:
        return True
    return _dead_here(owner)


def _dead_here(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another host: only the lease's expiry frees it
    pid = int(pid_text)
    if pid == os.getpid():
        return False  # another consumer object of this process: wait for expiry
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
