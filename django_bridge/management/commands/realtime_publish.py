"""``manage.py realtime_publish CHANNEL TYPE [DATA_JSON] [--state]``: send one event now."""

from __future__ import annotations

from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_bridge.publishing import make_envelope
from django_bridge.transports import get_transport
from realtime.errors import BrokerUnavailable, PublishError


class Command(BaseCommand):
    help = "Publish one event to a realtime channel (bypasses the outbox; fails loudly)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("channel", help="e.g. contest:42")
        parser.add_argument("type", help="event type, e.g. contest.announcement")
        parser.add_argument("data", nargs="?", default="null", help="JSON data (default null)")
        parser.add_argument("--state", action="store_true", help="make it the channel's state")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            data = orjson.loads(options["data"])
        except orjson.JSONDecodeError as exc:
            raise CommandError(f"data is not valid JSON: {exc}") from exc
        try:
            envelope = make_envelope(options["channel"], options["type"], data, options["state"])
        except PublishError as exc:
            raise CommandError(str(exc)) from exc
        try:
            results = get_transport().send([envelope])
        except (BrokerUnavailable, PublishError) as exc:
            raise CommandError(f"publish failed: {exc}") from exc
        for r in results:
            self.stdout.write(f"published {r.channel} epoch={r.epoch} offset={r.offset}")
