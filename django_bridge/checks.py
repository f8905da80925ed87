"""System checks for the ``REALTIME`` setting (run by ``manage.py check`` and at start-up)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import SplitResult, urlsplit

from django.apps import AppConfig
from django.core import checks

from django_bridge.conf import DEFAULTS, raw_settings
from realtime.brokers import redis_urls

BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "http", "https")
HINT_DOCS = "See docs/BRIDGE.md (settings)."


def _error(msg: str, id_: str, hint: str = HINT_DOCS) -> checks.CheckMessage:
    return checks.Error(msg, hint=hint, id=f"django_bridge.{id_}")


def _redis_url_errors(key: str, url: str, id_: str) -> list[checks.CheckMessage]:
    """One error naming what is wrong with a redis, cluster or sentinel URL, if anything."""
    try:
        redis_urls.parse(url)
    except redis_urls.RedisURLError as exc:
        return [_error(f"REALTIME['{key}'] {redis_urls.safe(url)!r}: {exc}.", id_)]
    return []


def _split(url: str) -> SplitResult | None:
    """``urlsplit`` with a checked port; None when the URL cannot be read."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    return parts


def broker_url_errors(raw: Mapping[str, Any]) -> list[checks.CheckMessage]:
    """One error per bad ``BROKER_URL`` or ``REDIS_URL`` (E002, E003, E005), each one line
    that names the problem without echoing credentials."""
    errors: list[checks.CheckMessage] = []
    broker = raw.get("BROKER_URL")
    parts = _split(broker) if isinstance(broker, str) else None
    if isinstance(broker, str) and redis_urls.is_redis_url(broker):
        errors.extend(_redis_url_errors("BROKER_URL", broker, "E002"))
    elif parts is None or parts.scheme not in BROKER_SCHEMES or not parts.hostname:
        shown = redis_urls.safe(broker) if isinstance(broker, str) else broker
        errors.append(
            _error(
                f"REALTIME['BROKER_URL'] is not a valid broker URL: {shown!r}.",
                "E002",
                "Use redis://host:6379/0 (or redis+cluster://, redis+sentinel://), "
                "amqp://user:pass@host:5672/%2F or http://host:8888.",
            )
        )
    elif parts.scheme in ("http", "https") and not raw.get("API_KEY"):
        errors.append(
            _error(
                "REALTIME['API_KEY'] is required with an http(s):// BROKER_URL.",
                "E003",
                "Set it to the realtime server's REALTIME_API_KEY.",
            )
        )
    redis_url = raw.get("REDIS_URL")
    if isinstance(redis_url, str) and redis_urls.is_redis_url(redis_url):
        errors.extend(_redis_url_errors("REDIS_URL", redis_url, "E005"))
    elif redis_url is not None:
        shown = redis_urls.safe(redis_url) if isinstance(redis_url, str) else redis_url
        errors.append(
            _error(
                f"REALTIME['REDIS_URL'] is not a Redis URL (redis://, rediss://, "
                f"redis+cluster://, rediss+cluster://, redis+sentinel://): {shown!r}.",
                "E005",
            )
        )
    return errors


def _positive_int(raw: dict[str, Any], key: str, minimum: int) -> list[checks.CheckMessage]:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return [
            _error(f"REALTIME['{key}'] must be an integer >= {minimum}, got {value!r}.", "E010")
        ]
    return []


@checks.register("realtime")
def check_realtime_settings(
    *,
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[checks.CheckMessage]:
    """Report a missing secret, a bad broker/server URL, and out-of-range numbers."""
    from django.conf import settings

    user = getattr(settings, "REALTIME", None)
    if user is None:
        return [
            _error(
                "The REALTIME setting is missing.",
                "E000",
                "Add REALTIME = {'BROKER_URL': ..., 'SECRET': ..., 'URL': ...} to settings.",
            )
        ]
    if not isinstance(user, dict):
        return [_error("REALTIME must be a dict.", "E000")]
    errors: list[checks.CheckMessage] = []
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        errors.append(
            checks.Warning(
                f"Unknown REALTIME key(s): {', '.join(unknown)}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="django_bridge.W001",
            )
        )
    raw = raw_settings()
    secret = raw["SECRET"]
    if not isinstance(secret, str) or not secret:
        errors.append(
            _error(
                "REALTIME['SECRET'] is missing: tokens cannot be signed.",
                "E001",
                "Set it to the realtime server's REALTIME_SECRET.",
            )
        )
    elif len(secret) < 32:
        errors.append(
            _error(
                "REALTIME['SECRET'] is shorter than 32 characters: the server refuses it.",
                "E001",
                "Use the realtime server's REALTIME_SECRET (at least 32 characters, RFC 7518 3.2).",
            )
        )
    errors.extend(broker_url_errors(raw))
    url = raw["URL"]
    url_parts = urlsplit(url) if isinstance(url, str) else None
    if url_parts is None or url_parts.scheme not in ("ws", "wss") or not url_parts.hostname:
        errors.append(
            _error(
                f"REALTIME['URL'] must be the ws:// or wss:// address browsers connect to, "
                f"got {url!r}.",
                "E004",
            )
        )
    for key, minimum in (
        ("HISTORY_SIZE", 0),
        ("HISTORY_TTL", 1),
        ("META_TTL", 0),
        ("RETRIES", 0),
        ("TOKEN_TTL", 1),
        ("OUTBOX_BATCH", 1),
    ):
        errors.extend(_positive_int(raw, key, minimum))
    for key in ("TIMEOUT", "RETRY_BACKOFF", "OUTBOX_POLL"):
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            errors.append(
                _error(f"REALTIME['{key}'] must be a number >= 0, got {value!r}.", "E011")
            )
    for key in ("OUTBOX", "RAISE_ON_ERROR", "CHECK_NAMESPACES"):
        if not isinstance(raw[key], bool):
            errors.append(
                _error(f"REALTIME['{key}'] must be True or False, got {raw[key]!r}.", "E012")
            )
    return errors
