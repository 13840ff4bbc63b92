"""``threshold topics list|tail``: the durable topics, their consumers, their last events."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from threshold._loop import run as run_async
from threshold.cli._common import add_db_option, add_json_option, print_json
from threshold.errors import NotFoundError
from threshold.patterns.topics import Topic, describe_topics
from threshold.store import open_store


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    topics = sub.add_parser("topics", help="list topics and tail their events")
    topics_sub = topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True)

    listing = topics_sub.add_parser("list", help="topics with their last offset and consumers")
    add_db_option(listing)
    add_json_option(listing)
    listing.set_defaults(handler=_list)

    tail = topics_sub.add_parser("tail", help="the last events of a topic")
    tail.add_argument("topic")
    tail.add_argument("-n", type=int, default=10, help="how many events (default: 10)")
    add_db_option(tail)
    add_json_option(tail)
    tail.set_defaults(handler=_tail)


def _list(args: argparse.Namespace) -> int:
    async def go() -> int:
        store = open_store(args.db)
        try:
            infos = await describe_topics(store)
        finally:
            await store.close()
        if args.json:
            print_json([i.to_dict() for i in infos])
            return 0
        for info in infos:
            print(f"{info.name:<36} {info.last_offset:>8} event(s)")
            for c in info.consumers:
                late = ", ".join(f"{k} {v}" for k, v in sorted(c.late.items()))
                print(f"  consumer {c.name:<25} offset {c.offset:>8}  lag {c.lag:>6}"
                      f"{f'  late: {late}' if late else ''}")
        print(f"{len(infos)} topic(s)")
        return 0

    return run_async(go())


def _tail(args: argparse.Namespace) -> int:
    async def go() -> int:
        store = open_store(args.db)
        try:
            topic = Topic(store, args.topic)
            if await topic.last_offset() == 0:
                raise NotFoundError(f"no topic {args.topic!r} (or it is empty) in {args.db}")
            events = await topic.tail(args.n)
        finally:
            await store.close()
        if args.json:
            print_json([asdict(e) for e in events])
            return 0
        for e in events:
            producer = e.headers.get("producer") or "?"
            model = e.headers.get("model_version")
            stamp = f" model={e.headers.get('model_id')}@{model}" if model else ""
            print(f"{e.offset:>8}  {e.event_time[:19]}  key={e.key or '-':<16} "
                  f"by {producer}{stamp}  {_short(e.payload)}")
        return 0

    return run_async(go())


def _short(value: object, limit: int = 100) -> str:
    text = repr(value).replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"
