"""What the realtime server says about itself (``GET /api/info``), and the namespace check.

Namespaces live in the server's config; a channel in a namespace the server does not know is
published fine but every subscribe to it gets ``unknown_channel``. ``note_channel`` (called by
``publish``) warns about that once per namespace and process. It never blocks a publish: the
info is fetched once per process in a background thread, and namespaces published before it
arrives are checked when it does. ``REALTIME['CHECK_NAMESPACES'] = False`` turns it off.
"""

from __future__ import annotations

import http.client
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from django_bridge import conf

logger = logging.getLogger(__name__)

RETRY_AFTER = 600.0  # seconds before a failed fetch is tried again
MAX_SEEN = 1000  # namespaces remembered per process (names come from code, not users)


class InfoUnavailable(Exception):
    """The server's ``/api/info`` could not be read."""


def fetch_info(server_url: str, timeout: float) -> dict[str, Any]:
    """GET ``<server_url>/api/info`` and return the decoded object.

    Raises:
        InfoUnavailable: connection failed, a status other than 200, or not JSON.
    """
    parts = urlsplit(server_url)
    https = parts.scheme == "https"
    cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
    conn = cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path.rstrip("/") + "/api/info")
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise InfoUnavailable(f"cannot reach {server_url}: {exc}") from exc
    finally:
        conn.close()
    if response.status != 200:
        raise InfoUnavailable(f"{server_url}/api/info answered {response.status}")
    try:
        info = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InfoUnavailable(f"{server_url}/api/info is not JSON: {exc}") from exc
    if not isinstance(info, dict) or not isinstance(info.get("namespaces"), dict):
        raise InfoUnavailable(f"{server_url}/api/info has no namespaces")
    return info


def server_health(server_url: str, timeout: float) -> tuple[int, str]:
    """GET ``<server_url>/healthz``; return (status, body) (``OSError`` if unreachable)."""
    parts = urlsplit(server_url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path.rstrip("/") + "/healthz")
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")[:300]
    except http.client.HTTPException as exc:
        raise OSError(str(exc)) from exc
    finally:
        conn.close()


def unknown_namespaces(channels: Iterable[str], namespaces: Mapping[str, Any]) -> list[str]:
    """Return the namespaces of ``channels`` that are not in ``namespaces`` (sorted, unique)."""
    return sorted({ch.partition(":")[0] for ch in channels} - set(namespaces))


def namespace_message(namespace: str, namespaces: Mapping[str, Any], where: str) -> str:
    """Say which namespace is missing, what the server has, and how to add it."""
    return (
        f"the realtime server at {where} has no namespace {namespace!r} "
        f"(it has: {', '.join(sorted(namespaces))}); every subscribe to {namespace}:... gets "
        f"unknown_channel: add [namespaces.{namespace}] to its config (docs/BRIDGE.md, Namespaces)"
    )


class _State:
    """Per-process state of the background check (rebuilt in a forked child)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.namespaces: dict[str, Any] | None = None
        self.fetching = False
        self.retry_at = 0.0
        self.seen: set[str] = set()
        self.warned: set[str] = set()


_state = _State()


def _current() -> _State:
    global _state
    if _state.pid != os.getpid():
        _state = _State()  # a forked child: the parent's thread and lock are not ours
    return _state


def note_channel(channel: str) -> None:
    """Warn (once per namespace) if the server does not know ``channel``'s namespace.

    Non-blocking: the first call of a process starts a background fetch of ``/api/info``.
    """
    settings = conf.get_settings()
    if not settings.check_namespaces:
        return
    namespace = channel.partition(":")[0]
    state = _current()
    with state.lock:
        if namespace in state.seen:
            return
        if len(state.seen) < MAX_SEEN:
            state.seen.add(namespace)
        known = state.namespaces
        start = known is None and not state.fetching and time.monotonic() >= state.retry_at
        if start:
            state.fetching = True
    if known is not None:
        _warn(state, [namespace], known, settings.server_url)
    elif start:
        threading.Thread(
            target=_fetch, args=(state, settings.server_url, settings.timeout), daemon=True
        ).start()


def _fetch(state: _State, server_url: str, timeout: float) -> None:
    try:
        info = fetch_info(server_url, timeout)
    except InfoUnavailable as exc:
        logger.info("realtime: namespace check skipped for now: %s", exc)
        with state.lock:
            state.fetching = False
            state.retry_at = time.monotonic() + RETRY_AFTER
        return
    namespaces = dict(info["namespaces"])
    with state.lock:
        state.namespaces = namespaces
        state.fetching = False
        seen = list(state.seen)
    _warn(state, seen, namespaces, server_url)


def _warn(state: _State, seen: list[str], namespaces: Mapping[str, Any], where: str) -> None:
    for namespace in unknown_namespaces((f"{ns}:x" for ns in seen), namespaces):
        with state.lock:
            if namespace in state.warned:
                continue
            state.warned.add(namespace)
        logger.warning("realtime publish: %s", namespace_message(namespace, namespaces, where))


def reset() -> None:
    """Forget the fetched info and the warnings (the settings changed)."""
    global _state
    _state = _State()


conf.on_reset(reset)
