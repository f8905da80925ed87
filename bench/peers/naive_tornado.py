"""The naive Tornado server most people write: a handler set per channel.

Per event: ``json.loads`` once, then ``json.dumps`` and ``write_message`` for every
subscriber. Events come from Redis pub/sub (the realtime layout, so the same publisher
feeds it).

Run: ``python -m bench.peers.naive_tornado --port 8892 --prefix bench-x:``
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import redis.asyncio as aioredis
import tornado.web
import tornado.websocket

from bench.peers.common import peer_parser, raise_fd_limit, split_redis_message, subscribed_reply

CHANNELS: dict[str, set[ChannelHandler]] = {}


class ChannelHandler(tornado.websocket.WebSocketHandler):
    """Subscribe on request; the Redis listener writes to every handler in the set."""

    def initialize(self) -> None:
        self.joined: list[str] = []

    def check_origin(self, origin: str) -> bool:
        return True

    def on_message(self, message: str | bytes) -> None:
        msg = json.loads(message)
        if msg.get("op") == "subscribe":
            channel = msg["channel"]
            CHANNELS.setdefault(channel, set()).add(self)
            self.joined.append(channel)
            self.write_message(json.dumps(subscribed_reply(channel)))

    def on_close(self) -> None:
        for channel in self.joined:
            CHANNELS.get(channel, set()).discard(self)


def broadcast(channel: str, event: dict[str, Any]) -> None:
    for handler in list(CHANNELS.get(channel, ())):
        with contextlib.suppress(tornado.websocket.WebSocketClosedError):
            handler.write_message(json.dumps(event))


async def listen_redis(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.psubscribe(prefix + "{*}")
    async for msg in pubsub.listen():
        if msg["type"] == "pmessage":
            channel, event_json = split_redis_message(prefix, msg["channel"], msg["data"])
            broadcast(channel, json.loads(event_json))


async def serve(host: str, port: int, redis_url: str, prefix: str) -> None:
    app = tornado.web.Application([(r"/ws", ChannelHandler)])
    app.listen(port, host, backlog=4096)
    await listen_redis(redis_url, prefix)


def main() -> None:
    args = peer_parser("The naive Tornado fan-out server.").parse_args()
    raise_fd_limit()
    asyncio.run(serve(args.host, args.port, args.redis_url, args.prefix))


if __name__ == "__main__":
    main()
