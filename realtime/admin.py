"""Operator control: the control API (API key) and the read-only ``/admin`` page.

Control orders travel through the broker on a server-internal channel
(``CONTROL_CHANNEL``, a namespace no client can subscribe to), so an order given to any
worker of any node reaches every connection of the user, wherever it is:

- ``POST /api/users/<user>/disconnect``: close the user's connections with 1008;
- ``POST /api/users/<user>/revoke`` (body ``{"channels": [...]}`` or nothing for every
  private one): drop subscriptions, each with ``unsubscribed`` reason ``revoked``;
- ``GET /api/channels/<channel>?history=N``: the channel's epoch, offset, state and the
  newest N events (default ``history_size``), as the store holds them.

With ``admin`` on, every worker publishes its figures on the same channel once a second;
each worker keeps the latest of every worker and node, which is what ``/admin/stats`` (and
the page at ``/admin``) shows: live, across workers and nodes.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import hmac
import logging
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson
import tornado.web

from realtime.context import ServerContext
from realtime.envelope import CHANNEL_RE, Envelope, Event
from realtime.errors import BrokerUnavailable, PublishError

logger = logging.getLogger(__name__)

CONTROL_CHANNEL = "rtadmin:control"
STATS_INTERVAL = 1.0  # seconds between a worker's figures
STALE_AFTER = 5.0  # a worker not heard from for this long is left off the page
TOP_CHANNELS = 10
PAGE = os.path.join(os.path.dirname(__file__), os.pardir, "static", "admin", "index.html")


def _counter_total(counter: Any) -> float:
    """Return this process's value of an unlabelled prometheus Counter."""
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                return float(sample.value)
    return 0.0


@dataclass
class Admin:
    """Control orders and live figures of one worker process (event loop only)."""

    ctx: ServerContext
    node_id: str = field(default_factory=lambda: socket.gethostname())
    peers: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    _heard: dict[tuple[str, int], float] = field(default_factory=dict)
    _last: tuple[float, float, float, float] | None = None  # time, in, out, published
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Listen on the control channel; publish figures every second when ``admin`` is on."""
        self.node_id = f"{socket.gethostname()}:{self.ctx.settings.port}"
        self.ctx.node.listen(CONTROL_CHANNEL, self._on_control)
        if self.ctx.settings.admin:
            self._task = asyncio.get_running_loop().create_task(self._report_loop())

    # -- orders -------------------------------------------------------------------------

    async def order(self, kind: str, data: dict[str, Any]) -> int:
        """Publish an order to every worker and node; return its offset.

        Raises:
            BrokerUnavailable: the broker cannot take it now (nothing was ordered).
        """
        if kind != "stats":
            data = {**data, "at": time.time()}  # one cut for every node: older tokens refused
        envelope = Envelope(
            channel=CONTROL_CHANNEL,
            type=f"admin.{kind}",
            data_json=orjson.dumps(data),
            state=False,
            id=None,  # never retried: no de-duplication key to store
        )
        # the broker directly, not Node.publish: control traffic stays out of the metrics
        return (await self.ctx.node.broker.publish(envelope)).offset

    def _on_control(self, event: Event) -> None:
        try:
            message = orjson.loads(event.json)
            kind, data = message["type"], message["data"]
            if not isinstance(data, dict) or (kind != "admin.stats" and "user" not in data):
                raise TypeError("not an order")
            channels = data.get("channels") if kind == "admin.revoke" else None
            if channels is not None and not (
                isinstance(channels, list) and all(isinstance(c, str) for c in channels)
            ):
                raise TypeError("channels is not a list of names")
            key = (str(data.get("node")), int(data.get("pid") or 0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            # anyone with the API key can publish here too: never let it break the listener
            logger.warning("malformed control event at offset %d", event.offset)
            return
        if kind == "admin.stats":
            self.peers[key] = data
            self._heard[key] = time.monotonic()
        elif kind == "admin.disconnect":
            user = str(data["user"])
            self.ctx.revoke_user(user, float(data.get("at") or time.time()))
            closed = 0
            for conn in list(self.ctx.connections):
                if conn.session.identity.user == user:
                    conn.disconnect(str(data.get("reason") or "disconnected by the operator"))
                    closed += 1
            logger.warning("control: disconnected user=%s (%d connection(s) here)", user, closed)
        elif kind == "admin.revoke":
            user = str(data["user"])
            if channels is None:  # every private channel: the user's tokens are revoked too
                self.ctx.revoke_user(user, float(data.get("at") or time.time()))
            dropped = 0
            for conn in list(self.ctx.connections):
                if conn.session.identity.user == user:
                    dropped += len(conn.revoke(channels, "revoked"))
            logger.warning("control: revoked user=%s (%d subscription(s) here)", user, dropped)

    # -- figures ------------------------------------------------------------------------

    def local_figures(self) -> dict[str, Any]:
        """This worker's figures, rates over the time since the previous call."""
        ctx = self.ctx
        metrics = ctx.metrics
        now = time.monotonic()
        totals = (
            _counter_total(metrics.events_in),
            _counter_total(metrics.messages_out),
            _counter_total(metrics.published),
        )
        rates = [0.0, 0.0, 0.0]
        if self._last is not None and now > self._last[0]:
            span = now - self._last[0]
            rates = [max(0.0, (t - p) / span) for t, p in zip(totals, self._last[1:], strict=True)]
        self._last = (now, *totals)
        hub = ctx.node.hub
        channels = hub._channels  # read-only: the busiest channels of this worker
        busiest = heapq.nlargest(TOP_CHANNELS, channels.items(), key=lambda kv: len(kv[1]))
        return {
            "node": self.node_id,
            "pid": os.getpid(),
            "at": time.time(),
            "connections": len(ctx.connections),
            "subscriptions": hub.subscription_count,
            "channels": hub.channel_count,
            "events_in_per_s": round(rates[0], 2),
            "messages_out_per_s": round(rates[1], 2),
            "published_per_s": round(rates[2], 2),
            "slow_consumers": _counter_total(metrics.slow_consumers),
            "broker": ctx.node.broker.status,
            "broker_up": ctx.node.healthy,
            "top": [[name, len(subs)] for name, subs in busiest],
        }

    async def _report_loop(self) -> None:
        while True:
            figures = self.local_figures()
            key = (self.node_id, figures["pid"])
            # kept locally too: the page still shows this worker while the broker is down
            self.peers[key] = figures
            self._heard[key] = time.monotonic()
            try:
                await self.order("stats", figures)
            except BrokerUnavailable as exc:
                logger.debug("admin figures not published: %s", exc)
            except Exception:
                logger.exception("admin figures not published")
            await asyncio.sleep(STATS_INTERVAL)

    def overview(self) -> dict[str, Any]:
        """Every live worker's latest figures, per node, with totals and the busiest channels."""
        now = time.monotonic()
        for key, heard in list(self._heard.items()):
            if now - heard > STALE_AFTER:
                del self._heard[key]
                self.peers.pop(key, None)
        workers = sorted(self.peers.values(), key=lambda f: (f["node"], f["pid"]))
        nodes: dict[str, dict[str, Any]] = {}
        busiest: dict[str, int] = {}
        summed = (
            "connections",
            "subscriptions",
            "events_in_per_s",
            "messages_out_per_s",
            "published_per_s",
            "slow_consumers",
        )
        totals: dict[str, float] = dict.fromkeys(summed, 0.0)
        for figures in workers:
            node = nodes.setdefault(
                figures["node"], {"node": figures["node"], "workers": [], "broker_up": True}
            )
            node["workers"].append(figures)
            node["broker_up"] = node["broker_up"] and bool(figures.get("broker_up"))
            for name in summed:
                totals[name] += float(figures.get(name, 0))
            for channel, count in figures.get("top", []):
                busiest[channel] = busiest.get(channel, 0) + int(count)
        top = heapq.nlargest(TOP_CHANNELS, busiest.items(), key=lambda kv: kv[1])
        return {
            "generated_at": time.time(),
            "answered_by": {"node": self.node_id, "pid": os.getpid()},
            "totals": {k: round(v, 2) for k, v in totals.items()},
            "nodes": list(nodes.values()),
            "busiest_channels": [{"channel": c, "subscribers": n} for c, n in top],
        }


# -- HTTP handlers ----------------------------------------------------------------------


class _AdminHandler(tornado.web.RequestHandler):
    ctx: ServerContext
    admin: Admin

    def initialize(self, ctx: ServerContext, admin: Admin) -> None:
        self.ctx = ctx
        self.admin = admin

    def send_json(self, status: int, obj: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(orjson.dumps(obj))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.send_json(status_code, {"error": self._reason})

    def _bearer_ok(self) -> bool:
        key = self.ctx.settings.api_key
        supplied = self.request.headers.get("Authorization", "")
        return bool(key) and hmac.compare_digest(supplied.encode(), f"Bearer {key}".encode())

    def require_api_key(self) -> bool:
        """Answer 403/401 and return False unless the request carries the API key."""
        if not self.ctx.settings.api_key:
            self.send_json(403, {"error": "the control API is disabled: set REALTIME_API_KEY"})
            return False
        if not self._bearer_ok():
            self.send_json(401, {"error": "missing or wrong API key (Authorization: Bearer ...)"})
            return False
        return True


class _UserOrderHandler(_AdminHandler):
    kind = ""

    async def post(self, user: str) -> None:
        if not self.require_api_key():
            return
        user = unquote(user)
        data: dict[str, Any] = {"user": user}
        try:
            body = orjson.loads(self.request.body) if self.request.body.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            data.update(self.order_data(body))
        except (orjson.JSONDecodeError, ValueError) as exc:
            self.send_json(400, {"error": str(exc)})
            return
        try:
            offset = await self.admin.order(self.kind, data)
        except BrokerUnavailable as exc:
            self.send_json(503, {"error": f"broker unavailable, nothing done: {exc}"})
            return
        except PublishError as exc:  # pragma: no cover - the envelope is ours
            self.send_json(500, {"error": str(exc)})
            return
        logger.warning(
            "control: %s user=%s ordered from %s", self.kind, user, self.request.remote_ip
        )
        self.send_json(202, {"ordered": self.kind, "user": user, "offset": offset})

    def order_data(self, body: dict[str, Any]) -> dict[str, Any]:
        return {}


class DisconnectHandler(_UserOrderHandler):
    """``POST /api/users/<user>/disconnect``: close every connection of the user (1008)."""

    kind = "disconnect"

    def order_data(self, body: dict[str, Any]) -> dict[str, Any]:
        reason = body.get("reason", "disconnected by the operator")
        if not isinstance(reason, str) or len(reason.encode()) > 120:
            raise ValueError("reason must be a string of at most 120 bytes")
        return {"reason": reason}


class RevokeHandler(_UserOrderHandler):
    """``POST /api/users/<user>/revoke``: drop the user's private (or listed) subscriptions."""

    kind = "revoke"

    def order_data(self, body: dict[str, Any]) -> dict[str, Any]:
        channels = body.get("channels")
        if channels is None:
            return {"channels": None}
        if not isinstance(channels, list) or not all(
            isinstance(c, str) and CHANNEL_RE.fullmatch(c) for c in channels
        ):
            raise ValueError("channels must be a list of channel names")
        return {"channels": channels}


class ChannelHandler(_AdminHandler):
    """``GET /api/channels/<channel>?history=N``: epoch, offset, state and recent events."""

    async def get(self, channel: str) -> None:
        if not self.require_api_key():
            return
        channel = unquote(channel)
        if not CHANNEL_RE.match(channel):
            self.send_json(400, {"error": "invalid channel name"})
            return
        size = self.ctx.settings.history_size
        raw = self.get_query_argument("history", str(size))
        if not raw.isdigit():
            self.send_json(400, {"error": "history must be a number"})
            return
        try:
            snap = await self.ctx.node.broker.snapshot(channel, min(int(raw), size))
        except BrokerUnavailable as exc:
            self.send_json(503, {"error": f"broker unavailable: {exc}"})
            return
        head = orjson.dumps({"channel": channel, "epoch": snap.epoch, "offset": snap.offset})
        # state and events are spliced in as stored: they are never re-encoded
        body = b"".join(
            (
                head[:-1],
                b',"state":',
                snap.state or b"null",
                b',"history":[',
                b",".join(e.json for e in snap.history),
                b"]}",
            )
        )
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


class _PageHandler(_AdminHandler):
    def prepare(self) -> None:
        settings = self.ctx.settings
        if not settings.admin:
            self.send_json(404, {"error": "the admin page is off (REALTIME_ADMIN)"})
            return
        if not (settings.api_key or settings.admin_password):
            self.send_json(403, {"error": "set REALTIME_API_KEY or REALTIME_ADMIN_PASSWORD"})
            return
        if self._bearer_ok() or self._basic_ok():
            return
        self.set_header("WWW-Authenticate", 'Basic realm="realtime admin", charset="UTF-8"')
        self.send_json(401, {"error": "API key or basic auth needed"})

    def _basic_ok(self) -> bool:
        supplied = self.request.headers.get("Authorization", "")
        if not supplied.startswith("Basic "):
            return False
        try:
            _, _, password = base64.b64decode(supplied[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        expected = self.ctx.settings.admin_password or self.ctx.settings.api_key or ""
        return bool(expected) and hmac.compare_digest(password.encode(), expected.encode())


class AdminPageHandler(_PageHandler):
    """``GET /admin``: the live page (static/admin/index.html)."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        with open(PAGE, "rb") as page:
            self.finish(page.read())


class AdminStatsHandler(_PageHandler):
    """``GET /admin/stats``: every live worker's figures (what the page polls)."""

    def get(self) -> None:
        self.send_json(200, self.admin.overview())


def admin_routes(ctx: ServerContext) -> list[Any]:
    """Build this process's ``Admin``, start it (on the running loop), return its routes."""
    admin = Admin(ctx)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # no running loop (an app built for a unit test): routes only
    else:
        admin.start()
    args = {"ctx": ctx, "admin": admin}
    routes: Iterable[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]] = (
        (r"/api/users/([^/]+)/disconnect", DisconnectHandler, args),
        (r"/api/users/([^/]+)/revoke", RevokeHandler, args),
        (r"/api/channels/([^/]+)", ChannelHandler, args),
        (r"/admin", AdminPageHandler, args),
        (r"/admin/stats", AdminStatsHandler, args),
    )
    return list(routes)
