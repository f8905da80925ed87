"""The end-to-end probe behind ``manage.py realtime_check``.

It does what a page and a publish do, in order, and stops at the first link that breaks:
read the server's ``/api/info``, open ``URL`` with the site's Origin, authenticate with a
token signed by ``SECRET``, subscribe to a probe channel, publish one event through the
configured transport, and wait for it on the socket. Each failure is a ``ProbeFailure``
whose ``link`` (server, origin, secret, namespace, broker, broker mismatch) and one-line
message say what to change.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from django_bridge.conf import BridgeSettings
from django_bridge.publishing import make_envelope
from django_bridge.serverinfo import (
    InfoUnavailable,
    fetch_info,
    namespace_message,
    server_health,
    unknown_namespaces,
)
from django_bridge.tokens import realtime_token
from django_bridge.transports import create_transport
from realtime.errors import BrokerUnavailable, PublishError

PROBE_TYPE = "realtime.check"


class ProbeFailure(Exception):
    """One link of the chain is broken; ``str()`` is the one line to print."""

    def __init__(self, link: str, message: str) -> None:
        super().__init__(f"{link}: {message}")
        self.link = link


@dataclass
class ProbeReport:
    """What passed (``ok`` lines) and what works but looks wrong (``warnings``)."""

    ok: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# the Redis broker kinds /api/info names (one Redis, a cluster, sentinels): they keep the
# store in the broker under REALTIME_REDIS_PREFIX
REDIS_KINDS = ("redis", "redis+cluster", "redis+sentinel")


def site_transport(settings: BridgeSettings) -> str:
    """Name the site's transport as the server's /api/info names brokers."""
    return {
        "rediss": "redis",
        "rediss+cluster": "redis+cluster",
        "amqps": "amqp",
        "https": "http",
    }.get(settings.scheme, settings.scheme)


def broker_mismatch(settings: BridgeSettings, info: dict[str, Any]) -> str | None:
    """Return why events published with ``settings`` cannot reach this server, or None.

    Only what can be told from the kinds and names in ``/api/info``: two Redis servers with
    the same prefix look alike here, and only the probe event tells them apart.
    """
    site = site_transport(settings)
    broker, store = info.get("broker"), info.get("store")
    if site == "http":
        return None  # /api/info came from SERVER_URL; BROKER_URL is checked by the probe
    if broker == "memory":
        return (
            f"the server runs on memory:// (its own in-process broker), so events the site "
            f"sends to {site} never reach it: start the server with REALTIME_BROKER_URL set to "
            f"the site's REALTIME['BROKER_URL'], or publish over http:// with API_KEY"
        )
    if site != broker:
        return (
            f"the server listens on {broker} but REALTIME['BROKER_URL'] sends to {site}: "
            f"use the server's REALTIME_BROKER_URL"
        )
    if broker in REDIS_KINDS and info.get("redis_prefix") not in (None, settings.prefix):
        return (
            f"REALTIME['PREFIX'] is {settings.prefix!r} but the server's REALTIME_REDIS_PREFIX "
            f"is {info.get('redis_prefix')!r}: they must be equal"
        )
    if broker == "amqp":
        if info.get("amqp_exchange") not in (None, settings.exchange):
            return (
                f"REALTIME['EXCHANGE'] is {settings.exchange!r} but the server's "
                f"REALTIME_AMQP_EXCHANGE is {info.get('amqp_exchange')!r}: they must be equal"
            )
        if store == "redis" and not settings.redis_url:
            return (
                "the server numbers events in Redis (REALTIME_REDIS_URL is set) but "
                "REALTIME['REDIS_URL'] is unset, so the site sends raw envelopes the server "
                "does not number: set REALTIME['REDIS_URL'] to the server's REALTIME_REDIS_URL"
            )
        if store == "memory" and settings.redis_url:
            return (
                "REALTIME['REDIS_URL'] is set but the server has no REALTIME_REDIS_URL: the "
                "site numbers events in a Redis the server does not read; set the same URL "
                "on both sides or remove REALTIME['REDIS_URL']"
            )
    return None


def history_mismatch(settings: BridgeSettings, info: dict[str, Any]) -> str | None:
    """Return a warning when the site's history settings differ from the server's."""
    stores = site_transport(settings) in REDIS_KINDS or settings.redis_url
    history = info.get("history")
    if not stores or not isinstance(history, dict):
        return None
    ours = {
        "size": settings.history_size,
        "ttl": settings.history_ttl,
        "meta_ttl": settings.meta_ttl,
    }
    differ = [k for k, v in ours.items() if history.get(k) != v]
    if not differ:
        return None
    keys = {"size": "HISTORY_SIZE", "ttl": "HISTORY_TTL", "meta_ttl": "META_TTL"}
    return "history settings differ from the server's: " + ", ".join(
        f"REALTIME['{keys[k]}']={ours[k]} vs {history.get(k)}" for k in differ
    )


def probe_channel(namespaces: dict[str, Any]) -> tuple[str, str]:
    """Pick a probe channel the token will be allowed to read; return (channel, token sub).

    A ``granted`` namespace also proves that the token's ``channels`` claim is honoured.
    """
    marker = f"rtcheck-{uuid.uuid4().hex[:12]}"
    by_access: dict[str, str] = {}
    for name, rules in sorted(namespaces.items()):
        access = rules.get("access", "public") if isinstance(rules, dict) else "public"
        by_access.setdefault(str(access), name)
    for access in ("granted", "user", "public"):
        if access in by_access:
            return f"{by_access[access]}:{marker}", marker
    raise ProbeFailure("namespace", "the server has no namespace to probe")


def run_probe(
    settings: BridgeSettings,
    origin: str,
    channels: Iterable[str] = (),
    wait: float = 5.0,
    say: Callable[[str], None] = lambda line: None,
) -> ProbeReport:
    """Run every step; return the report, or raise ``ProbeFailure`` at the first broken link.

    Args:
        origin: the Origin a page of this site sends (``http://127.0.0.1:8000`` in dev).
        channels: channels the site publishes to; their namespaces must exist on the server.
        wait: seconds to wait for the probe event.
        say: called with each passed step as it passes (progress output).
    """
    report = ProbeReport()

    def ok(line: str) -> None:
        report.ok.append(line)
        say(line)

    try:
        info = fetch_info(settings.server_url, settings.timeout)
    except InfoUnavailable as exc:
        raise ProbeFailure("server", f"{exc} (REALTIME['SERVER_URL'] or URL)") from exc
    ok(
        f"server: {settings.server_url} (realtime {info.get('version')}, protocol "
        f"{info.get('protocol')}, broker {info.get('broker')}, store {info.get('store')})"
    )
    try:
        status, body = server_health(settings.server_url, settings.timeout)
    except OSError as exc:
        raise ProbeFailure("server", f"{settings.server_url}/healthz: {exc}") from exc
    if status != 200:
        # e.g. its Redis or RabbitMQ link is down: no event could arrive, whatever the site does
        raise ProbeFailure("server", f"unhealthy ({status}): {body}")
    namespaces = info["namespaces"]
    missing = unknown_namespaces(channels, namespaces)
    if missing:
        raise ProbeFailure(
            "namespace", namespace_message(missing[0], namespaces, settings.server_url)
        )
    if channels:
        ok(f"namespaces: {', '.join(sorted({c.partition(':')[0] for c in channels}))} known")
    mismatch = broker_mismatch(settings, info)
    history = history_mismatch(settings, info)
    if history:
        report.warnings.append(history)
    channel, sub = probe_channel(namespaces)
    token = realtime_token(sub, channels=[channel], ttl=60)
    envelope = make_envelope(channel, PROBE_TYPE, {"probe": sub})
    try:
        arrived_in = asyncio.run(
            _socket_probe(
                settings, origin, token, channel, sub, wait, ok, lambda: _send(settings, envelope)
            )
        )
    except StoreMismatch as exc:
        if int(info.get("history", {}).get("size", 1) or 0) == 0:
            arrived_in = exc.arrived_in  # a server without history cannot show it
        else:
            raise ProbeFailure(
                "broker mismatch",
                f"the probe event was published through {site_transport(settings)} and reached"
                f" the server at {settings.server_url} live, but the server's store does not "
                f"hold it: REALTIME['BROKER_URL'] must name the database of the server's "
                f"REALTIME_BROKER_URL (Redis pub/sub crosses databases, the keys do not), so "
                f"recovery would fail",
            ) from None
    if arrived_in is None:
        if mismatch:
            raise ProbeFailure("broker mismatch", mismatch)
        raise ProbeFailure(
            "broker mismatch",
            f"the probe event was published through {site_transport(settings)} but did not "
            f"reach the server at {settings.server_url} within {wait:g}s: REALTIME['BROKER_URL']"
            f" must lead to the server's REALTIME_BROKER_URL (same Redis database, RabbitMQ "
            f"vhost, or server)",
        )
    ok(f"probe: event on {channel} arrived in {arrived_in * 1000:.0f} ms")
    if mismatch:
        # delivered anyway (a server that numbers raw envelopes itself): still worth fixing
        report.warnings.append(mismatch)
    return report


def _send(settings: BridgeSettings, envelope: Any) -> str:
    transport = create_transport(settings)
    try:
        where = transport.check()
        transport.send([envelope])
    except (BrokerUnavailable, PublishError) as exc:
        raise ProbeFailure(
            "broker", f"cannot publish through {settings.broker_url.split('@')[-1]}: {exc}"
        ) from exc
    finally:
        transport.close()
    return where


async def _socket_probe(
    settings: BridgeSettings,
    origin: str,
    token: str,
    channel: str,
    marker: str,
    wait: float,
    ok: Callable[[str], None],
    send: Callable[[], str],
) -> float | None:
    """Connect, auth, subscribe, publish (``send`` in a thread), wait; return seconds or None."""
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import WebSocketClientConnection, websocket_connect

    request = HTTPRequest(
        settings.url,
        headers={"Origin": origin},
        connect_timeout=settings.timeout,
        request_timeout=settings.timeout,
    )
    try:
        ws: WebSocketClientConnection = await websocket_connect(request)
    except HTTPClientError as exc:
        if exc.code == 403:
            raise ProbeFailure(
                "origin",
                f"the server refused Origin {origin} (403): add it to the server's "
                f"REALTIME_ALLOWED_ORIGINS (or run it with --dev for local origins)",
            ) from exc
        raise ProbeFailure("server", f"WebSocket handshake at {settings.url}: {exc}") from exc
    except (TimeoutError, OSError) as exc:
        raise ProbeFailure("server", f"cannot connect to {settings.url}: {exc}") from exc
    pending: list[dict[str, Any]] = []

    async def next_message(
        match: Callable[[dict[str, Any]], bool], within: float
    ) -> dict[str, Any] | None:
        deadline = time.monotonic() + within
        while True:
            for i, message in enumerate(pending):
                if match(message):
                    return pending.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                frame = await asyncio.wait_for(ws.read_message(), remaining)
            except TimeoutError:
                return None
            if frame is None:
                raise ProbeFailure("server", f"the server closed the socket ({ws.close_code})")
            text = frame.decode() if isinstance(frame, bytes) else frame
            pending.extend(orjson.loads(line) for line in text.split("\n") if line.strip())

    try:
        if await next_message(lambda m: m.get("op") == "welcome", settings.timeout) is None:
            raise ProbeFailure("server", f"no welcome from {settings.url}")
        ok(f"origin: {origin} accepted by {settings.url}")
        ws.write_message(orjson.dumps({"op": "auth", "token": token}).decode())
        reply = await next_message(lambda m: m.get("op") in ("authed", "error"), settings.timeout)
        if reply is None or reply["op"] != "authed":
            detail = reply.get("message") if reply else "no answer"
            raise ProbeFailure(
                "secret",
                f"the server rejected a token signed with REALTIME['SECRET'] ({detail}): it "
                f"must equal the server's REALTIME_SECRET",
            )
        ok("secret: token signed with REALTIME['SECRET'] accepted")
        ws.write_message(orjson.dumps({"op": "subscribe", "channel": channel}).decode())
        reply = await next_message(
            lambda m: m.get("channel") == channel and m.get("op") in ("subscribed", "error"),
            settings.timeout,
        )
        if reply is None or reply["op"] != "subscribed":
            detail = f"{reply.get('code')}: {reply.get('message')}" if reply else "no answer"
            raise ProbeFailure("namespace", f"subscribe to {channel} failed ({detail})")
        started = time.monotonic()
        where = await asyncio.get_running_loop().run_in_executor(None, send)
        ok(f"broker: published through {where}")
        event = await next_message(
            lambda m: (
                m.get("op") == "event"
                and m.get("channel") == channel
                and isinstance(m.get("data"), dict)
                and m["data"].get("probe") == marker
            ),
            wait,
        )
        if event is None:
            return None
        arrived_in = time.monotonic() - started
        # pub/sub ignores Redis database numbers: an event published into another
        # database still reaches the server. Its store must hold it too, or every page's
        # recovery fails: read the channel's history back through a fresh subscribe.
        ws.write_message(orjson.dumps({"op": "unsubscribe", "channel": channel}).decode())
        await next_message(lambda m: m.get("op") == "unsubscribed", settings.timeout)
        since = {"epoch": "0", "offset": 0}  # offset 0: all of history, whatever the epoch
        command = {"op": "subscribe", "channel": channel, "since": since, "id": "rtcheck"}
        ws.write_message(orjson.dumps(command).decode())
        reply = await next_message(
            lambda m: m.get("op") in ("subscribed", "error") and m.get("id") == "rtcheck",
            settings.timeout,
        )
        missed = (reply or {}).get("missed") or []
        if not any(
            isinstance(m.get("data"), dict) and m["data"].get("probe") == marker for m in missed
        ):
            raise StoreMismatch(arrived_in)
        return arrived_in
    finally:
        ws.close()


class StoreMismatch(Exception):
    """The probe event arrived live, but the server's store does not hold it."""

    def __init__(self, arrived_in: float) -> None:
        super().__init__(arrived_in)
        self.arrived_in = arrived_in
