"""python-socketio with its Redis manager (``AsyncRedisManager``), served by aiohttp.

A client emits ``subscribe`` with ``{"channel": c}``, joins room ``c`` and gets a
``subscribed`` event; the publisher's write-only manager emits ``event`` to the room.

Run: ``python -m bench.peers.socketio_peer --port 8894 --prefix bench-x:``
(the load generator connects to ``ws://127.0.0.1:8894/socket.io/?EIO=4&transport=websocket``
with ``--socketio``).
"""

from __future__ import annotations

from typing import Any

import socketio  # type: ignore[import-untyped]
from aiohttp import web

from bench.peers.common import peer_parser, raise_fd_limit, subscribed_reply


def make_app(redis_url: str, prefix: str) -> web.Application:
    """Return the aiohttp application with the socket.io server attached."""
    manager = socketio.AsyncRedisManager(redis_url, channel=prefix)
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager)

    @sio.on("subscribe")  # type: ignore[untyped-decorator]
    async def subscribe(sid: str, data: dict[str, Any]) -> None:
        channel = data["channel"]
        await sio.enter_room(sid, channel)
        await sio.emit("subscribed", subscribed_reply(channel), to=sid)

    app = web.Application()
    sio.attach(app)
    return app


def main() -> None:
    args = peer_parser("python-socketio + AsyncRedisManager peer.").parse_args()
    raise_fd_limit()
    web.run_app(
        make_app(args.redis_url, args.prefix),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
