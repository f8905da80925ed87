"""``manage.py realtime_check``: can this Django reach the broker and the server?"""

from __future__ import annotations

import http.client
from typing import Any
from urllib.parse import urlsplit

from django.core import checks
from django.core.management.base import BaseCommand, CommandError

from django_bridge.checks import check_realtime_settings
from django_bridge.conf import get_settings
from django_bridge.transports import create_transport
from realtime.errors import BrokerUnavailable


def server_health(base_url: str, timeout: float) -> tuple[int, str]:
    """GET ``<base_url>/healthz``; return (status, body)."""
    parts = urlsplit(base_url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path.rstrip("/") + "/healthz")
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")[:300]
    finally:
        conn.close()


class Command(BaseCommand):
    help = "Check the REALTIME settings, the broker and the realtime server; exit 1 on failure."
    requires_system_checks: list[str] = []  # report our own checks with a clear exit code

    def handle(self, *args: Any, **options: Any) -> None:
        problems = [m for m in check_realtime_settings() if m.level >= checks.ERROR]
        if problems:
            raise CommandError("settings: " + "; ".join(str(m.msg) for m in problems))
        settings = get_settings()
        transport = create_transport(settings)
        try:
            where = transport.check()
        except BrokerUnavailable as exc:
            raise CommandError(f"broker unreachable: {exc}") from exc
        finally:
            transport.close()
        self.stdout.write(f"broker ok: {where}")
        try:
            status, body = server_health(settings.server_url, settings.timeout)
        except OSError as exc:
            raise CommandError(f"server unreachable at {settings.server_url}: {exc}") from exc
        if status != 200:
            raise CommandError(f"server at {settings.server_url} unhealthy ({status}): {body}")
        self.stdout.write(f"server ok: {settings.server_url}/healthz")
