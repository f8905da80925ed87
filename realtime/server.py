"""Wire it all together: broker, node, app; listen; signals; graceful shutdown; workers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import time

import tornado.httpserver
import tornado.ioloop
import tornado.netutil

from realtime.app import make_app
from realtime.brokers import create_broker
from realtime.config import Settings
from realtime.context import ServerContext
from realtime.fdlimit import SPARE, raise_open_files
from realtime.heartbeat import HeartbeatWheel
from realtime.metrics import Metrics
from realtime.node import Node
from realtime.presence import Presence, create_presence
from realtime.protocol import TokenBucket

logger = logging.getLogger(__name__)


class Server:
    """One server process: start, serve until stopped, drain."""

    def __init__(self, settings: Settings, sockets: list[socket.socket] | None = None) -> None:
        self.settings = settings
        self._sockets = sockets
        self.ctx: ServerContext | None = None
        self._http: tornado.httpserver.HTTPServer | None = None
        self._stopped = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._heartbeat: tornado.ioloop.PeriodicCallback | None = None
        self._presence: Presence | None = None

    async def start(self) -> None:
        """Bind (unless sockets were given), start the broker in the background, serve."""
        metrics = Metrics()
        broker = create_broker(self.settings)
        if hasattr(broker, "on_misconfigured"):  # the amqp broker reports setup mismatches

            def misconfigured(reason: str) -> None:
                metrics.misconfigured.labels(reason).inc()

            broker.on_misconfigured = misconfigured
        node = Node(self.settings, broker, metrics)
        heartbeat = HeartbeatWheel(self.settings.heartbeat)
        self.ctx = ServerContext(
            settings=self.settings, node=node, metrics=metrics, heartbeat=heartbeat
        )
        rate = self.settings.max_connect_rate
        if rate > 0:
            self.ctx.connect_bucket = TokenBucket(rate, max(1, int(rate)), time.monotonic)
        app = make_app(self.ctx)
        self._http = tornado.httpserver.HTTPServer(
            app, xheaders=self.settings.trust_proxy_headers, idle_connection_timeout=60
        )
        sockets = self._sockets or tornado.netutil.bind_sockets(
            self.settings.port, self.settings.host, backlog=4096
        )
        await node.start()
        if self._sockets:
            # a (re)started worker shares the port with healthy siblings: let them take the
            # connections until its broker is up (a lone process serves at once, 503 on /healthz)
            await node.wait_healthy(3.0)
        self._http.add_sockets(sockets)
        self._heartbeat = tornado.ioloop.PeriodicCallback(
            heartbeat.tick, heartbeat.tick_seconds * 1000
        )
        self._heartbeat.start()
        self._presence = create_presence(self.settings, node)
        if self._presence is not None:
            self._background.append(asyncio.create_task(self._presence.run()))
        if self.settings.demo:
            from realtime.demo import run_demo

            self._background.append(asyncio.create_task(run_demo(node, self._stopped)))
        port = sockets[0].getsockname()[1]
        logger.info(
            "realtime listening on http://%s:%d (broker %s, pid %d)",
            self.settings.host,
            port,
            self.settings.broker_url.split("://", 1)[0],
            os.getpid(),
        )

    async def shutdown(self) -> None:
        """Stop accepting, close every connection with 1012, wait up to the timeout."""
        ctx = self.ctx
        if ctx is None or ctx.shutting_down:
            return
        ctx.shutting_down = True
        self._stopped.set()
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self._http is not None:
            self._http.stop()
        count = len(ctx.connections)
        logger.info("shutting down: closing %d connections with 1012", count)
        for conn in list(ctx.connections):
            conn.shutdown()
        if ctx.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    ctx.all_closed.wait(), max(0.1, self.settings.shutdown_timeout - 0.5)
                )
        for conn in list(ctx.connections):
            conn.abort()  # peers that never answered the close frame
        for task in self._background:
            task.cancel()
        if self._presence is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._presence.close(), timeout=1.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ctx.node.close(), timeout=2.0)
        if self._http is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http.close_all_connections(), timeout=1.0)

    async def run(self) -> None:
        """Start, then serve until SIGTERM/SIGINT, then drain."""
        await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.shutdown()
        logger.info("stopped")


def _install_loop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but keep running without
        return
    uvloop.install()


def within_open_files(settings: Settings) -> Settings:
    """Raise the open-file limit; cap ``max_connections`` to what it leaves room for.

    Past the limit ``accept`` fails with EMFILE, which an event loop retries at once, for
    as long as the limit holds; under the cap the handshake is refused with 503 and
    ``Retry-After`` (and with ``--workers`` another worker takes the retry).
    """
    room = raise_open_files(settings.max_connections, settings.workers) - SPARE
    if settings.max_connections > room:
        return dataclasses.replace(settings, max_connections=max(1, room))
    return settings


def serve(settings: Settings) -> int:
    """Run the server in this process, or a supervisor of ``settings.workers`` processes."""
    settings = within_open_files(settings)
    if settings.workers > 1:
        from realtime.workers import supervise

        code: int = supervise(settings)
        return code
    _install_loop()
    asyncio.run(Server(settings).run())
    return 0


def serve_worker(settings: Settings, sockets: list[socket.socket]) -> None:
    """Entry point of one worker process on already-bound sockets."""
    _install_loop()
    asyncio.run(Server(settings, sockets).run())
    sys.exit(0)
