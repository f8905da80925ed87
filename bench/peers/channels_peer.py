"""Django Channels 4 with channels_redis ``group_send`` (default ``RedisChannelLayer``).

The consumer is the one the Channels tutorial teaches: ``group_add`` on subscribe and
``send_json`` (one ``json.dumps`` per client) in the group message handler. Served by
uvicorn. The layer's settings are its defaults (capacity 100 per channel), as users run it.

Run: ``python -m bench.peers.channels_peer --port 8893 --prefix bench-x:``
"""

from __future__ import annotations

from typing import Any

from bench.peers.common import peer_parser, raise_fd_limit, subscribed_reply
from bench.publishers import group_name


def make_app(redis_url: str, prefix: str) -> Any:
    """Configure Django in code and return the ASGI application."""
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [redis_url], "prefix": prefix},
            }
        },
    )
    django.setup()
    from channels.generic.websocket import (  # type: ignore[import-untyped]
        AsyncJsonWebsocketConsumer,
    )
    from channels.routing import ProtocolTypeRouter, URLRouter  # type: ignore[import-untyped]
    from django.urls import path

    class BenchConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
        async def connect(self) -> None:
            self.joined: list[str] = []
            await self.accept()

        async def receive_json(self, content: Any, **kwargs: Any) -> None:
            if content.get("op") == "subscribe":
                channel = content["channel"]
                await self.channel_layer.group_add(group_name(channel), self.channel_name)
                self.joined.append(group_name(channel))
                await self.send_json(subscribed_reply(channel))

        async def bench_event(self, message: dict[str, Any]) -> None:
            await self.send_json(message["event"])

        async def disconnect(self, code: int) -> None:
            for group in self.joined:
                await self.channel_layer.group_discard(group, self.channel_name)

    return ProtocolTypeRouter({"websocket": URLRouter([path("ws", BenchConsumer.as_asgi())])})


def main() -> None:
    args = peer_parser("Django Channels 4 + channels_redis peer.").parse_args()
    raise_fd_limit()
    import uvicorn

    app = make_app(args.redis_url, args.prefix)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        lifespan="off",
        backlog=4096,
        ws_ping_interval=None,
    )


if __name__ == "__main__":
    main()
