"""``manage.py realtime_check``: does an event published here reach a page of this site?"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core import checks
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_bridge.checks import check_realtime_settings
from django_bridge.conf import get_settings
from django_bridge.probe import ProbeFailure, run_probe

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def default_origin() -> str:
    """Guess the Origin of this site's pages: CSRF_TRUSTED_ORIGINS, else ALLOWED_HOSTS.

    In development (DEBUG, a local or no host) that is runserver's ``http://<host>:8000``.
    """
    trusted = [o for o in getattr(django_settings, "CSRF_TRUSTED_ORIGINS", []) if "*" not in o]
    if trusted:
        return str(trusted[0]).rstrip("/")
    hosts = [h for h in django_settings.ALLOWED_HOSTS if h not in ("*", "testserver")]
    hosts = [h.lstrip(".") for h in hosts if "*" not in h]
    host = hosts[0] if hosts else "localhost"
    if host in LOCAL_HOSTS or host.endswith(".localhost"):
        return f"http://{host}:8000"
    return f"https://{host}"


class Command(BaseCommand):
    help = (
        "Probe the realtime setup end to end: server, Origin, SECRET, namespaces, and an "
        "event published through REALTIME['BROKER_URL'] arriving on a WebSocket. Exits 1 "
        "with one line naming the broken link."
    )
    requires_system_checks: list[str] = []  # report our own checks with a clear exit code

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--origin",
            help="the Origin the site's pages send (default: from CSRF_TRUSTED_ORIGINS or "
            "ALLOWED_HOSTS; http://<host>:8000 for a local host)",
        )
        parser.add_argument(
            "--channel",
            action="append",
            default=[],
            metavar="NAME",
            help="a channel the site publishes to (its namespace must exist on the server); "
            "repeatable",
        )
        parser.add_argument(
            "--wait", type=float, default=5.0, help="seconds to wait for the probe event"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        problems = [m for m in check_realtime_settings() if m.level >= checks.ERROR]
        if problems:
            raise CommandError("settings: " + "; ".join(str(m.msg) for m in problems))
        origin = options["origin"] or default_origin()
        try:
            report = run_probe(
                get_settings(),
                origin,
                channels=options["channel"],
                wait=options["wait"],
                say=lambda line: self.stdout.write(f"ok  {line}"),
            )
        except ProbeFailure as exc:
            raise CommandError(str(exc)) from exc
        for warning in report.warnings:
            self.stderr.write(f"warning: {warning}")
        self.stdout.write("realtime_check: ok")
