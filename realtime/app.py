"""HTTP side of the server: ``make_app`` wires /ws, /api/publish, /healthz, /metrics, /static."""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path
from typing import Any

import orjson
import tornado.web

from realtime.admin import admin_routes
from realtime.context import ServerContext
from realtime.envelope import envelopes_from_body
from realtime.errors import BrokerUnavailable, PublishError
from realtime.handshake import WebSocketHandshake
from realtime.sse import SseHandler

logger = logging.getLogger(__name__)

# package data in a wheel; in a checkout realtime/static links to the top-level static/
# (the fallback covers a checkout without symlinks, e.g. git on Windows)
STATIC_DIR = Path(__file__).resolve().parent / "static"
if not STATIC_DIR.is_dir():
    STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


class _Handler(tornado.web.RequestHandler):
    ctx: ServerContext

    def initialize(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def send_json(self, status: int, obj: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(orjson.dumps(obj))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.send_json(status_code, {"error": self._reason})


@tornado.web.stream_request_body
class PublishHandler(_Handler):
    """``POST /api/publish``: one envelope or a list; answers the offsets.

    The body is streamed so that an oversize one is refused with 413 from its
    Content-Length, before it is read, instead of being buffered.
    """

    def prepare(self) -> None:
        settings = self.ctx.settings
        self._chunks: list[bytes] = []
        self._size = 0
        if self.request.method != "POST":
            return
        if not settings.api_key:
            self.send_json(403, {"error": "HTTP publish is disabled: set REALTIME_API_KEY"})
            return
        supplied = self.request.headers.get("Authorization", "")
        expected = f"Bearer {settings.api_key}"
        if not hmac.compare_digest(supplied.encode(), expected.encode()):
            self.send_json(401, {"error": "missing or wrong API key (Authorization: Bearer ...)"})
            return
        declared = self.request.headers.get("Content-Length", "0")
        if declared.isdigit() and int(declared) > settings.max_publish_body:
            self._too_big()
            return
        # chunked bodies: read at most a little past the limit, then answer 413
        self.request.connection.set_max_body_size(settings.max_publish_body + 65536)  # type: ignore[union-attr]

    def _too_big(self) -> None:
        self.send_json(413, {"error": f"body over {self.ctx.settings.max_publish_body} bytes"})

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= self.ctx.settings.max_publish_body:
            self._chunks.append(chunk)

    async def post(self) -> None:
        if self._size > self.ctx.settings.max_publish_body:
            self._too_big()
            return
        try:
            envelopes = envelopes_from_body(b"".join(self._chunks))
        except PublishError as exc:
            self.send_json(400, {"error": str(exc)})
            return
        results = []
        try:
            for envelope in envelopes:
                published = await self.ctx.node.publish(envelope)
                results.append(
                    {
                        "channel": published.channel,
                        "offset": published.offset,
                        "epoch": published.epoch,
                        # true: this id was published before, so this call published
                        # nothing new (the stored event was sent again, see RELIABILITY.md)
                        "duplicate": published.duplicate,
                    }
                )
        except BrokerUnavailable as exc:
            # the envelopes before this one are published: say which
            self.send_json(503, {"error": f"broker unavailable: {exc}", "results": results})
            return
        self.send_json(200, {"results": results})


class HealthHandler(_Handler):
    """``GET /healthz``: readiness (can serve and the broker is connected)."""

    def get(self) -> None:
        ctx = self.ctx
        body = {
            "broker": ctx.node.broker.status,
            "connections": len(ctx.connections),
            "channels": ctx.node.hub.channel_count,
            "pid": os.getpid(),  # which worker answered, under --workers
        }
        if ctx.shutting_down:
            self.send_json(503, {"status": "unavailable", "reason": "shutting down", **body})
        elif not ctx.node.healthy:
            reason = f"broker not connected: {ctx.node.broker.status}"
            self.send_json(503, {"status": "unavailable", "reason": reason, **body})
        else:
            self.send_json(200, {"status": "ok", **body})


class LiveHandler(_Handler):
    """``GET /livez``: liveness (the process answers), whatever the broker does."""

    def get(self) -> None:
        self.send_json(200, {"status": "alive", "pid": os.getpid()})


class MetricsHandler(_Handler):
    """``GET /metrics`` in the Prometheus text format."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.ctx.metrics.render())


PROTOCOL_VERSION = 1  # the envelope "v" and the wire contract of shared/spec/PROTOCOL.md


def server_info(ctx: ServerContext) -> dict[str, Any]:
    """Describe what a publisher must agree with: broker, store, history, namespaces.

    No secrets and no addresses: only kinds, names and rules (``realtime_check`` and the
    bridge's namespace check read it).
    """
    from realtime import __version__

    s = ctx.settings
    scheme = s.broker_url.split("://", 1)[0]
    broker = {"rediss": "redis", "rediss+cluster": "redis+cluster", "amqps": "amqp"}.get(
        scheme, scheme
    )
    # memory:// keeps its own store, redis:// (and its cluster and sentinel forms) stores in
    # itself, amqp:// in REALTIME_REDIS_URL
    store = broker if broker != "amqp" else ("redis" if s.redis_url else "memory")
    return {
        "server": "realtime",
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "broker": broker,
        "store": store,
        "redis_prefix": s.redis_prefix if store.startswith("redis") else None,
        "amqp_exchange": s.amqp_exchange if broker == "amqp" else None,
        "history": {"size": s.history_size, "ttl": s.history_ttl, "meta_ttl": s.meta_ttl},
        "http_publish": bool(s.api_key),
        "origins": {"allowed": list(s.allowed_origins), "local": s.dev or s.demo},
        "namespaces": {
            name: {"access": ns.access, "coalesce_ms": ns.coalesce_ms}
            for name, ns in sorted(s.namespaces.items())
        },
    }


class InfoHandler(_Handler):
    """``GET /api/info``: versions, broker and store kinds, namespaces (no secrets)."""

    def get(self) -> None:
        self.send_json(200, server_info(self.ctx))


class DemoHandler(tornado.web.RequestHandler):
    """``GET /`` in demo mode: the live demo page."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish((STATIC_DIR / "demo" / "index.html").read_bytes())


def make_app(ctx: ServerContext) -> tornado.web.Application:
    """Build the Tornado application for one server process."""
    settings = ctx.settings
    args = {"ctx": ctx}
    routes: list[Any] = [
        (r"/ws", WebSocketHandshake, args),
        (r"/sse", SseHandler, args),
        (r"/api/publish", PublishHandler, args),
        (r"/api/info", InfoHandler, args),
        (r"/healthz", HealthHandler, args),
        (r"/livez", LiveHandler, args),
        (r"/metrics", MetricsHandler, args),
    ]
    routes.extend(admin_routes(ctx))  # control API and /admin (realtime.admin)
    if settings.demo:
        routes.append((r"/", DemoHandler))
    return tornado.web.Application(
        routes,
        static_path=str(STATIC_DIR),
        # pings come from one process-wide timer (realtime.heartbeat), not a task per
        # connection
        websocket_ping_interval=None,
        websocket_max_message_size=settings.max_message_size,
        # the publish handler streams and enforces its own limit (413); others take no body
        max_body_size=max(settings.max_publish_body * 4, 1 << 20),
        compress_response=False,
        log_function=_log_request,
    )


def _log_request(handler: tornado.web.RequestHandler) -> None:
    status = handler.get_status()
    if status >= 500 and not isinstance(handler, HealthHandler):
        level = logging.WARNING
    else:
        level = logging.DEBUG
    if logger.isEnabledFor(level):
        request = handler.request
        logger.log(
            level,
            "%d %s %s %.1fms",
            status,
            request.method,
            request.uri,
            1000.0 * request.request_time(),
        )
