"""Reading a topic from its end: the last events, and an event by its dedupe key.

Only recovery needs ``find_by_dedupe_key`` (a publish whose outcome a crash hid), so it
scans backwards in pages instead of costing every append an index.
"""

from __future__ import annotations

from threshold.store import Store, TopicEvent

PAGE = 512
DEDUPE_HEADER = "dedupe_key"


async def last_offset(store: Store, topic: str) -> int:
    return next((last for name, last in await store.list_topics() if name == topic), 0)


async def tail(store: Store, topic: str, n: int) -> list[TopicEvent]:
    """The last ``n`` events of ``topic``, oldest first."""
    if n <= 0:
        return []
    last = await last_offset(store, topic)
    return await store.read_topic(topic, after=max(last - n, 0), limit=n)


async def find_by_dedupe_key(store: Store, topic: str, key: str) -> TopicEvent | None:
    """The newest event of ``topic`` whose ``dedupe_key`` header is ``key``."""
    end = await last_offset(store, topic)
    while end > 0:
        start = max(end - PAGE, 0)
        page = await store.read_topic(topic, after=start, limit=end - start)
        for event in reversed(page):
            if event.headers.get(DEDUPE_HEADER) == key:
                return event
        end = start
    return None
