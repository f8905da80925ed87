"""``manage.py realtime_relay``: send outbox rows until stopped (or once with ``--once``)."""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_bridge.relay import pending_count, relay_batch, run_relay
from realtime.errors import BrokerUnavailable

logger = logging.getLogger("django_bridge.relay")


class Command(BaseCommand):
    help = "Relay REALTIME outbox rows to the broker, in order. Safe to run several at once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="send what is pending, then exit")
        parser.add_argument("--database", default=None, help="database alias of the outbox")
        parser.add_argument("--batch", type=int, default=None, help="rows per transaction")
        parser.add_argument(
            "--purge-after",
            type=float,
            default=3600.0,
            help="delete rows sent this many seconds ago (0 = keep)",
        )
        parser.add_argument(
            "--max-backoff",
            type=float,
            default=30.0,
            help="longest wait between retries while the broker is down (seconds)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        db, batch = options["database"], options["batch"]
        if options["once"]:
            total = 0
            while pending_count(db):
                try:
                    sent = relay_batch(db, batch)
                except BrokerUnavailable as exc:
                    raise CommandError(f"broker unavailable: {exc}") from exc
                if not sent:
                    raise CommandError("another relay holds the lease; try again")
                total += sent
            self.stdout.write(f"relayed {total} event(s)")
            return
        self._loop(db, batch, options["purge_after"], options["max_backoff"])

    def _loop(
        self, db: str | None, batch: int | None, purge_after: float, max_backoff: float
    ) -> None:
        try:
            run_relay(db, batch, purge_after=purge_after, max_backoff=max_backoff)
        except KeyboardInterrupt:
            logger.info("realtime relay stopped")
