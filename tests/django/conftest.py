"""Fixtures of the Django bridge tests: the sample project, a real server, WebSocket clients.

Django is configured here (not in setup.cfg) so that nothing global changes for the other
test directories: this file points DJANGO_SETTINGS_MODULE at ``bridge_sample_settings``
and sets Django up; pytest-django's fixtures (``db``, ``client``, ``settings``) then work.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for extra in (str(HERE), str(ROOT / "example"), str(ROOT)):
    if extra not in sys.path:
        sys.path.insert(0, extra)
os.environ["DJANGO_SETTINGS_MODULE"] = "bridge_sample_settings"

import django  # noqa: E402

django.setup()

import bridge_sample_settings as sample  # noqa: E402
import redis  # noqa: E402
from bridge_helpers import RealtimeOverride, RealtimeServer, start_server  # noqa: E402

from tests.conftest import require_service  # noqa: E402


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    """A client of the shared Redis; removes this run's keys at the end."""
    client = redis.Redis.from_url(require_service(sample.REDIS_URL, 6379))
    client.ping()
    yield client
    keys = list(client.scan_iter(match=f"{sample.REDIS_PREFIX}*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])
    client.close()


@pytest.fixture(scope="session")
def bridge_server(redis_client: redis.Redis) -> Iterator[RealtimeServer]:
    """A real ``realtime serve`` process on the redis broker (this run's key prefix)."""
    server = start_server(
        {
            "REALTIME_BROKER_URL": sample.REDIS_URL,
            "REALTIME_REDIS_PREFIX": sample.REDIS_PREFIX,
        }
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def realtime_settings(settings: Any, bridge_server: RealtimeServer) -> RealtimeOverride:
    """Point REALTIME at the running server (redis transport); item assignment changes it."""
    return RealtimeOverride(settings, {**sample.REALTIME, "URL": bridge_server.ws_url})
