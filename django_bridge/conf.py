"""The ``REALTIME`` setting, read through one cached object.

Every other module calls ``get_settings()``; the cache (and every open transport) is dropped
when Django's ``setting_changed`` signal fires for ``REALTIME`` (tests, ``override_settings``).
Validation that needs clear messages lives in ``checks.py``; this module only parses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from realtime.brokers.redis_layout import DEFAULT_PREFIX

DEFAULTS: dict[str, Any] = {
    "BROKER_URL": "http://127.0.0.1:8888",
    "SECRET": None,
    "URL": "ws://127.0.0.1:8888/ws",
    "API_KEY": None,
    "REDIS_URL": None,
    "PREFIX": DEFAULT_PREFIX,
    "HISTORY_SIZE": 100,
    "HISTORY_TTL": 600,
    "META_TTL": 86400,
    "EXCHANGE": "realtime",
    "OUTBOX": False,
    "OUTBOX_POLL": 0.2,
    "OUTBOX_BATCH": 200,
    "RETRIES": 3,
    "RETRY_BACKOFF": 0.1,
    "TIMEOUT": 2.0,
    "RAISE_ON_ERROR": False,
    "BREAKER_THRESHOLD": 3,
    "BREAKER_COOLDOWN": 10.0,
    "TOKEN_TTL": 3600,
    "TOKEN_REFRESH_MAX_AGE": 86400,
    "SERVER_URL": None,
    "CLIENT_JS_URL": None,
    # warn when a published channel's namespace is unknown to the server (GET /api/info)
    "CHECK_NAMESPACES": True,
    # read by django_bridge.leaderboard (standings store); None: REDIS_URL or a redis BROKER_URL
    "LEADERBOARD_REDIS_URL": None,
    "LEADERBOARD_PREFIX": "lb:",
}


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    """The parsed ``REALTIME`` dict (see docs/BRIDGE.md for each key)."""

    broker_url: str
    secret: str | None
    url: str
    api_key: str | None
    redis_url: str | None
    prefix: str
    history_size: int
    history_ttl: int
    meta_ttl: int
    exchange: str
    outbox: bool
    outbox_poll: float
    outbox_batch: int
    retries: int
    retry_backoff: float
    timeout: float
    raise_on_error: bool
    breaker_threshold: int
    breaker_cooldown: float
    token_ttl: int
    token_refresh_max_age: int
    server_url: str
    client_js_url: str
    check_namespaces: bool = True

    @property
    def scheme(self) -> str:
        """The transport scheme of ``BROKER_URL``: redis, rediss, amqp, amqps, http, https."""
        return urlsplit(self.broker_url).scheme


def http_base_from_ws(url: str) -> str:
    """Turn the browsers' ``ws(s)://host:port/ws`` into the server's ``http(s)://host:port``."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path[: -len("/ws")] if parts.path.endswith("/ws") else parts.path
    return urlunsplit((scheme, parts.netloc, path.rstrip("/"), "", ""))


def raw_settings() -> dict[str, Any]:
    """Return the user's ``REALTIME`` dict merged over the defaults (unvalidated)."""
    user = getattr(django_settings, "REALTIME", None) or {}
    merged = dict(DEFAULTS)
    if isinstance(user, dict):
        merged.update(user)
    return merged


def _parse(raw: dict[str, Any]) -> BridgeSettings:
    server_url = raw["SERVER_URL"] or http_base_from_ws(str(raw["URL"]))
    return BridgeSettings(
        broker_url=str(raw["BROKER_URL"]),
        secret=raw["SECRET"],
        url=str(raw["URL"]),
        api_key=raw["API_KEY"],
        redis_url=raw["REDIS_URL"],
        prefix=str(raw["PREFIX"]),
        history_size=int(raw["HISTORY_SIZE"]),
        history_ttl=int(raw["HISTORY_TTL"]),
        meta_ttl=int(raw["META_TTL"]),
        exchange=str(raw["EXCHANGE"]),
        outbox=bool(raw["OUTBOX"]),
        outbox_poll=float(raw["OUTBOX_POLL"]),
        outbox_batch=int(raw["OUTBOX_BATCH"]),
        retries=int(raw["RETRIES"]),
        retry_backoff=float(raw["RETRY_BACKOFF"]),
        timeout=float(raw["TIMEOUT"]),
        raise_on_error=bool(raw["RAISE_ON_ERROR"]),
        breaker_threshold=int(raw["BREAKER_THRESHOLD"]),
        breaker_cooldown=float(raw["BREAKER_COOLDOWN"]),
        token_ttl=int(raw["TOKEN_TTL"]),
        token_refresh_max_age=int(raw["TOKEN_REFRESH_MAX_AGE"]),
        server_url=str(server_url).rstrip("/"),
        client_js_url=str(raw["CLIENT_JS_URL"] or f"{server_url.rstrip('/')}/static/realtime.js"),
        check_namespaces=bool(raw["CHECK_NAMESPACES"]),
    )


_lock = threading.Lock()
_cached: BridgeSettings | None = None
_reset_hooks: list[Callable[[], None]] = []


def get_settings() -> BridgeSettings:
    """Return the parsed settings (cached until ``REALTIME`` changes)."""
    global _cached
    current = _cached
    if current is None:
        with _lock:
            if _cached is None:
                _cached = _parse(raw_settings())
            current = _cached
    return current


def on_reset(hook: Callable[[], None]) -> None:
    """Register a function to call when the settings change (e.g. close transports)."""
    _reset_hooks.append(hook)


def reset() -> None:
    """Drop the cached settings and run the reset hooks."""
    global _cached
    with _lock:
        _cached = None
    for hook in _reset_hooks:
        hook()


@receiver(setting_changed)
def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "REALTIME":
        reset()
