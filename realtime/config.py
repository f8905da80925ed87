"""Settings: one frozen object, loaded from defaults < config file < environment < flags.

``load_settings`` is the only entry point; it either returns a complete, validated
``Settings`` or raises ``ConfigError`` with a one-line message that names the setting.
Tests build ``Settings(...)`` directly.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from realtime.errors import ConfigError

Access = Literal["public", "user", "granted"]
ACCESS_VALUES = ("public", "user", "granted")


@dataclass(frozen=True, slots=True)
class Namespace:
    """Rules of one channel namespace.

    ``access``: ``public`` (anyone), ``user`` (token ``sub`` equals the part after the
    colon), ``granted`` (token ``channels`` claim grants it). ``coalesce_ms`` > 0 lets the
    fan-out skip intermediate events within that window (latest wins); with ``merge_max``
    > 0 the window's events are sent together in one frame instead (at most that many, the
    newest: a client sees the offset gap when more were dropped). ``presence`` counts the
    channel's watchers across nodes and publishes them on ``presence:<channel>``.
    """

    access: Access = "public"
    coalesce_ms: int = 0
    merge_max: int = 0
    presence: bool = False


def default_namespaces() -> dict[str, Namespace]:
    """Return the contract's default namespaces (PROTOCOL.md section 2)."""
    return {
        "leaderboard": Namespace(access="public", coalesce_ms=500, presence=True),
        "contest": Namespace(access="public", presence=True),
        "user": Namespace(access="user"),
        "submission": Namespace(access="granted"),
        # the unfrozen board of a contest's jury (docs/LEADERBOARDS.md); an addition
        "jury": Namespace(access="granted", coalesce_ms=500),
        # every change of a public board as a small move, merged per window (LEADERBOARDS.md)
        "standings": Namespace(access="public", coalesce_ms=500, merge_max=200, presence=True),
        # watcher counts of channels whose namespace sets presence (realtime/presence.py)
        "presence": Namespace(access="public"),
    }


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the server. Field docs live in config/realtime.toml."""

    # [server]
    host: str = "127.0.0.1"
    port: int = 8888
    workers: int = 1
    shutdown_timeout: float = 10.0
    dev: bool = False
    demo: bool = False
    admin: bool = False  # the read-only /admin page (docs/OPERATIONS.md)
    # [broker]
    broker_url: str = "memory://"
    redis_url: str | None = None
    redis_prefix: str = "rt:"
    amqp_exchange: str = "realtime"
    unsubscribe_grace: float = 2.0
    # [auth]
    secret: str | None = None
    api_key: str | None = None
    allowed_origins: tuple[str, ...] = ()
    trust_proxy_headers: bool = False  # take the client address from X-Real-IP/X-Forwarded-For
    require_exp: bool = False
    admin_password: str | None = None  # basic-auth password of /admin (else the API key)
    # [limits]
    max_connections: int = 50000
    max_connections_per_ip: int = 0  # 0 = unlimited
    max_connect_rate: float = 2000.0  # new connections a second per process; 0 = unlimited
    max_send_buffer: int = 1048576
    max_message_size: int = 65536
    max_subscriptions: int = 100
    rate_limit: float = 100.0  # commands per second per connection
    rate_burst: int = 200
    flood_close_after: int = 20  # rate-limited commands before the 1008 close
    # subscribes to channels a connection has not held before: per connection and per
    # client IP (tokens a second, burst); bounds what made-up channel names can cost
    channel_churn_rate: float = 10.0
    channel_churn_burst: int = 200
    ip_channel_churn_rate: float = 100.0
    ip_channel_churn_burst: int = 2000
    max_publish_body: int = 1048576
    heartbeat: int = 25
    # [history]
    history_size: int = 100
    history_ttl: int = 600
    meta_ttl: int = 86400
    presence_interval: float = 5.0  # seconds between watcher-count reports; 0 = off
    # [logging]
    log_level: str = "INFO"
    log_json: bool = False
    # [namespaces.*]
    namespaces: Mapping[str, Namespace] = field(default_factory=default_namespaces)

    def namespace(self, name: str) -> Namespace | None:
        """Return the rules of a namespace, or None when it is not configured."""
        return self.namespaces.get(name)


# setting name -> config-file section; env name is REALTIME_<NAME upper>
SECTIONS: dict[str, str] = {
    "host": "server",
    "port": "server",
    "workers": "server",
    "shutdown_timeout": "server",
    "dev": "server",
    "demo": "server",
    "admin": "server",
    "broker_url": "broker",
    "redis_url": "broker",
    "redis_prefix": "broker",
    "amqp_exchange": "broker",
    "unsubscribe_grace": "broker",
    "secret": "auth",
    "api_key": "auth",
    "allowed_origins": "auth",
    "trust_proxy_headers": "auth",
    "require_exp": "auth",
    "admin_password": "auth",
    "max_connections": "limits",
    "max_connections_per_ip": "limits",
    "max_connect_rate": "limits",
    "max_send_buffer": "limits",
    "max_message_size": "limits",
    "max_subscriptions": "limits",
    "rate_limit": "limits",
    "rate_burst": "limits",
    "flood_close_after": "limits",
    "channel_churn_rate": "limits",
    "channel_churn_burst": "limits",
    "ip_channel_churn_rate": "limits",
    "ip_channel_churn_burst": "limits",
    "max_publish_body": "limits",
    "heartbeat": "limits",
    "history_size": "history",
    "history_ttl": "history",
    "meta_ttl": "history",
    "presence_interval": "history",
    "log_level": "logging",
    "log_json": "logging",
}

# documented in docs/DEPLOY.md "Step 0": the bridge accepts them as they are (>= 32 chars)
DEMO_SECRET = "dev-secret-not-for-production-0123456789"
DEV_API_KEY = "dev-api-key-not-for-production"


def env_name(name: str) -> str:
    """Return the environment variable of a setting."""
    return f"REALTIME_{name.upper()}"


def _field_types() -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(Settings)}


def _coerce(name: str, raw: Any, origin: str) -> Any:
    """Convert a raw value (str from env/flags, typed from TOML) to the field's type."""
    kind = _field_types()[name]

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{name} ({origin}): expected {expected}, got {raw!r}")

    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise bad("true or false")
    if kind == "int":
        if isinstance(raw, bool):
            raise bad("an integer")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise bad("an integer") from None
    if kind == "float":
        if isinstance(raw, bool):
            raise bad("a number")
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise bad("a number") from None
    if kind == "tuple[str, ...]":
        if isinstance(raw, str):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            return tuple(raw)
        raise bad("a list of strings")
    if kind in ("str", "str | None"):
        if not isinstance(raw, str):
            raise bad("a string")
        if kind == "str | None" and raw == "":
            return None
        return raw
    raise AssertionError(f"unhandled setting type {kind}")  # pragma: no cover


def _parse_namespaces(table: Any, origin: str) -> dict[str, Namespace]:
    if not isinstance(table, dict):
        raise ConfigError(f"namespaces ({origin}): expected tables [namespaces.<name>]")
    result: dict[str, Namespace] = {}
    for name, rules in table.items():
        where = f"namespaces.{name} ({origin})"
        if not isinstance(name, str) or not name.isidentifier() or not name.islower():
            raise ConfigError(f"{where}: namespace names are lowercase [a-z][a-z0-9_]*")
        if not isinstance(rules, dict):
            raise ConfigError(f"{where}: expected a table")
        unknown = set(rules) - {"access", "coalesce_ms", "merge_max", "presence"}
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        access = rules.get("access", "public")
        if access not in ACCESS_VALUES:
            raise ConfigError(f"{where}: access must be one of {', '.join(ACCESS_VALUES)}")
        coalesce = rules.get("coalesce_ms", 0)
        if isinstance(coalesce, bool) or not isinstance(coalesce, int) or coalesce < 0:
            raise ConfigError(f"{where}: coalesce_ms must be an integer >= 0")
        merge = rules.get("merge_max", 0)
        if isinstance(merge, bool) or not isinstance(merge, int) or merge < 0:
            raise ConfigError(f"{where}: merge_max must be an integer >= 0")
        presence = rules.get("presence", False)
        if not isinstance(presence, bool):
            raise ConfigError(f"{where}: presence must be true or false")
        result[name] = Namespace(
            access=access, coalesce_ms=coalesce, merge_max=merge, presence=presence
        )
    return result


def _read_file(path: Path) -> tuple[dict[str, Any], dict[str, Namespace] | None]:
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"--config: file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {path} is not valid TOML: {exc}") from None
    origin = str(path)
    values: dict[str, Any] = {}
    namespaces = None
    for section, table in doc.items():
        if section == "namespaces":
            namespaces = _parse_namespaces(table, origin)
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"{section} ({origin}): expected a [section] table")
        for key, raw in table.items():
            if SECTIONS.get(key) != section:
                raise ConfigError(f"{section}.{key} ({origin}): unknown setting")
            values[key] = _coerce(key, raw, origin)
    return values, namespaces


_VALIDATORS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("port", lambda v: 0 <= v <= 65535, "a port number 0-65535"),
    ("workers", lambda v: 1 <= v <= 256, "between 1 and 256"),
    ("shutdown_timeout", lambda v: 0 < v <= 3600, "between 0 and 3600 seconds"),
    ("unsubscribe_grace", lambda v: 0 <= v <= 3600, "between 0 and 3600 seconds"),
    ("max_connections", lambda v: v >= 1, "at least 1"),
    ("max_connections_per_ip", lambda v: v >= 0, "0 (unlimited) or more"),
    ("max_connect_rate", lambda v: v >= 0, "0 (unlimited) or more per second"),
    ("max_send_buffer", lambda v: v >= 1024, "at least 1024 bytes"),
    ("max_message_size", lambda v: 128 <= v <= 16 * 1048576, "between 128 bytes and 16 MiB"),
    ("max_subscriptions", lambda v: v >= 1, "at least 1"),
    ("rate_limit", lambda v: v > 0, "greater than 0"),
    ("rate_burst", lambda v: v >= 1, "at least 1"),
    ("flood_close_after", lambda v: v >= 1, "at least 1"),
    ("channel_churn_rate", lambda v: v > 0, "greater than 0"),
    ("channel_churn_burst", lambda v: v >= 1, "at least 1"),
    ("ip_channel_churn_rate", lambda v: v > 0, "greater than 0"),
    ("ip_channel_churn_burst", lambda v: v >= 1, "at least 1"),
    ("max_publish_body", lambda v: v >= 1024, "at least 1024 bytes"),
    ("heartbeat", lambda v: 1 <= v <= 3600, "between 1 and 3600 seconds"),
    ("history_size", lambda v: 0 <= v <= 100000, "between 0 and 100000"),
    ("history_ttl", lambda v: v >= 1, "at least 1 second"),
    ("meta_ttl", lambda v: v >= 0, "0 (never expire) or more seconds"),
    ("presence_interval", lambda v: v == 0 or 0.1 <= v <= 3600, "0 (off) or 0.1 to 3600 s"),
    (
        "log_level",
        lambda v: v.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
        "DEBUG|INFO|WARNING|ERROR",
    ),
]


def _check_url(name: str, value: str | None, schemes: tuple[str, ...]) -> None:
    if value is None:
        return
    from realtime.brokers.redis_urls import safe  # pure parsing, no client

    shown = safe(value)  # never echo a password
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # an unclosed [IPv6 address
        raise ConfigError(f"{name}: not a URL ({exc}): {shown!r}") from None
    if parts.scheme not in schemes:
        raise ConfigError(f"{name}: scheme must be one of {', '.join(schemes)}, got {shown!r}")
    if parts.scheme != "memory" and not parts.hostname:
        raise ConfigError(f"{name}: no host in {shown!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{name}: bad port in {shown!r}") from None


def _check_broker_url(name: str, value: str | None, others: tuple[str, ...]) -> None:
    """Check a URL that may be any Redis form (one, cluster, sentinel) or one of ``others``."""
    if value is None:
        return
    from realtime.brokers import redis_urls  # pure parsing, no client

    if not redis_urls.is_redis_url(value):
        _check_url(name, value, (*redis_urls.REDIS_SCHEMES, *others))
        return
    try:
        redis_urls.parse(value)
    except redis_urls.RedisURLError as exc:
        raise ConfigError(f"{name}: {exc} in {redis_urls.safe(value)!r}") from None


def validate(settings: Settings) -> Settings:
    """Check cross-field rules; return the settings (with demo/dev defaults filled in)."""
    for name, ok, expected in _VALIDATORS:
        value = getattr(settings, name)
        if not ok(value):
            raise ConfigError(f"{name}: must be {expected}, got {value!r}")
    _check_broker_url("broker_url", settings.broker_url, ("memory", "amqp", "amqps"))
    _check_broker_url("redis_url", settings.redis_url, ())
    if settings.workers > 1 and settings.broker_url.startswith("memory"):
        raise ConfigError(
            "workers: more than 1 needs a shared broker (redis:// or amqp://); "
            "memory:// lives inside one process"
        )
    if settings.redis_url and not settings.broker_url.startswith("amqp"):
        raise ConfigError("redis_url: only used with an amqp:// broker (redis:// stores in itself)")
    for origin in settings.allowed_origins:
        if origin != "*" and not urlsplit(origin).hostname:
            raise ConfigError(f"allowed_origins: {origin!r} is not an origin like https://site")
    changes: dict[str, Any] = {"log_level": settings.log_level.upper()}
    if not settings.secret:
        if settings.dev or settings.demo:
            changes["secret"] = DEMO_SECRET
        else:
            raise ConfigError(
                f"secret: {env_name('secret')} is required (or run with --dev for local use)"
            )
    elif len(settings.secret) < 32 and not (settings.dev or settings.demo):
        raise ConfigError("secret: use at least 32 characters for an HS256 key (RFC 7518 3.2)")
    if settings.dev and not settings.api_key:
        changes["api_key"] = DEV_API_KEY  # --dev: Django can publish over HTTP at once
    return dataclasses.replace(settings, **changes)


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the effective settings: defaults < file < environment < overrides (flags).

    Raises:
        ConfigError: one line naming the bad setting.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    namespaces: dict[str, Namespace] | None = None
    if path is not None:
        values, namespaces = _read_file(Path(path))
    for name in SECTIONS:
        raw = env.get(env_name(name))
        if raw is not None:
            values[name] = _coerce(name, raw, f"env {env_name(name)}")
    for name, raw in (overrides or {}).items():
        if name not in SECTIONS:
            raise ConfigError(f"{name}: unknown setting")
        if raw is not None:
            values[name] = raw if not isinstance(raw, str) else _coerce(name, raw, "flag")
    if namespaces is not None:
        values["namespaces"] = namespaces
    return validate(Settings(**values))


def effective_items(settings: Settings) -> list[tuple[str, str, Any]]:
    """Return (section, name, value) for every setting, secrets masked (check-config)."""
    items: list[tuple[str, str, Any]] = []
    for name, section in SECTIONS.items():
        value = getattr(settings, name)
        if name in ("secret", "api_key", "admin_password") and value:
            value = "********"
        items.append((section, name, value))
    return items
