"""Redis URLs: one Redis, a Redis Cluster, or a primary found through Sentinel.

Accepted forms (the server's ``broker_url``/``redis_url`` and the bridge's ``BROKER_URL``/
``REDIS_URL``)::

    redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]        rediss:// for TLS
    redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...][/]
                                                      rediss+cluster:// for TLS
    redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]
        [?sentinel_username=U&sentinel_password=P]

The cluster form lists seed nodes: the rest of the cluster is discovered. The sentinel form
lists sentinels; the user and password in it are the data nodes' (as redis-py's
``Sentinel(..., password=...)``), ``sentinel_username``/``sentinel_password`` the sentinels'
own (redis-py's ``sentinel_kwargs``). Pure parsing, no client here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

Kind = Literal["single", "cluster", "sentinel"]

SINGLE_SCHEMES = ("redis", "rediss")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel",)
REDIS_SCHEMES = SINGLE_SCHEMES + CLUSTER_SCHEMES + SENTINEL_SCHEMES
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")


class RedisURLError(ValueError):
    """A Redis URL that cannot be used; the message is one line naming the problem."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where a Redis URL points and how to authenticate."""

    kind: Kind
    url: str
    nodes: tuple[tuple[str, int], ...]
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0
    service: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    @property
    def sharded(self) -> bool:
        """True for a Redis Cluster (sharded pub/sub, SPUBLISH)."""
        return self.kind == "cluster"


def scheme_of(url: str) -> str:
    """Return the scheme of ``url`` (the text before ``://``), lower-cased."""
    return url.partition("://")[0].lower() if "://" in url else ""


def is_redis_url(url: str) -> bool:
    """True when ``url`` has one of the Redis schemes (not yet validated)."""
    return scheme_of(url) in REDIS_SCHEMES


def parse(url: str) -> RedisTarget:
    """Parse and validate a Redis URL of any of the three forms.

    Raises:
        RedisURLError: one line saying what is wrong.
    """
    scheme = scheme_of(url)
    if scheme not in REDIS_SCHEMES:
        raise RedisURLError(f"scheme must be one of {', '.join(REDIS_SCHEMES)}")
    if not url.startswith(scheme):
        # the broker is chosen by the scheme as written: REDIS+CLUSTER:// would pass here and
        # fail at start-up
        raise RedisURLError(f"write the scheme in lower case ({scheme}://)")
    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    rest, _, _fragment = rest.partition("#")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon:  # redis://PASSWORD@host is redis-py's shorthand too
            username, password = None, unquote(user) or None
    if scheme in SINGLE_SCHEMES:
        return _single(url, scheme, hosts, path, username, password)
    nodes = _nodes(hosts)
    options = dict(parse_qsl(query, keep_blank_values=True))
    if scheme in CLUSTER_SCHEMES:
        if path not in ("",) or options:
            what = f"path /{path}" if path else f"option {next(iter(options))!r}"
            raise RedisURLError(f"a cluster URL takes seed nodes only, not a {what}")
        return RedisTarget(
            "cluster",
            url,
            nodes,
            tls=scheme == "rediss+cluster",
            username=username,
            password=password,
        )
    unknown = [key for key in options if key not in _SENTINEL_OPTIONS]
    if unknown:
        raise RedisURLError(
            f"unknown option {unknown[0]!r} (known: {', '.join(_SENTINEL_OPTIONS)})"
        )
    blank = [key for key, value in options.items() if not value]
    if blank:
        raise RedisURLError(f"option {blank[0]!r} has no value")
    parts = [p for p in path.split("/")] if slash else []
    if parts and parts[-1] == "":
        parts.pop()
    if not parts or not parts[0]:
        raise RedisURLError("a sentinel URL needs the service name: .../SERVICE_NAME[/DB]")
    if len(parts) > 2:
        raise RedisURLError("a sentinel URL's path is /SERVICE_NAME[/DB]")
    db = _db(parts[1]) if len(parts) == 2 else 0
    return RedisTarget(
        "sentinel",
        url,
        nodes,
        username=username,
        password=password,
        db=db,
        service=unquote(parts[0]),
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
    )


def _single(
    url: str, scheme: str, hosts: str, path: str, username: str | None, password: str | None
) -> RedisTarget:
    if "," in hosts:
        raise RedisURLError(
            "several hosts need redis+cluster:// (seed nodes) or redis+sentinel:// (sentinels)"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unclosed [IPv6 address
        raise RedisURLError(f"not a URL ({exc})") from None
    if not parts.hostname:
        raise RedisURLError("no host")
    try:
        port = parts.port or 6379
    except ValueError:
        raise RedisURLError("bad port") from None
    db = _db(path.rstrip("/")) if path.rstrip("/") else 0
    return RedisTarget(
        "single",
        url,
        ((parts.hostname, port),),
        tls=scheme == "rediss",
        username=username,
        password=password,
        db=db,
    )


def _nodes(hosts: str) -> tuple[tuple[str, int], ...]:
    if not hosts:
        raise RedisURLError("no HOST:PORT given")
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host:
            raise RedisURLError(f"{item!r} is not HOST:PORT")
        host = host.strip("[]")  # [::1]:7000
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise RedisURLError(f"bad port in {item!r}")
        nodes.append((host, int(port)))
    return tuple(nodes)


def _db(text: str) -> int:
    if not text.isdigit():
        raise RedisURLError(f"database {text!r} is not a number")
    return int(text)


def safe(url: str) -> str:
    """Return ``url`` without its credentials and options (for logs and messages)."""
    scheme, sep, rest = url.partition("://")
    rest = rest.rsplit("@", 1)[-1].split("?", 1)[0]
    return scheme + sep + rest
