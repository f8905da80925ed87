"""The outbox relay: send pending outbox rows in id order and mark them sent.

Several relays may run at once (one per host, for availability), but only one sends at a
time: each batch runs in a transaction that first locks the ``RelayLease`` row (``SELECT
... FOR UPDATE SKIP LOCKED`` where the database has it, so a standby relay skips instead of
waiting; on SQLite an UPDATE of the row takes the database's write lock). Sending from one
relay at a time is what keeps every channel's events in publish order; a batch that fails
is rolled back and resent whole later, and the envelope ids make that resend harmless.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections.abc import Callable
from datetime import timedelta

from django.db import InterfaceError, OperationalError, connections, router, transaction
from django.utils import timezone

from django_bridge.conf import get_settings
from django_bridge.models import OutboxEvent, RelayLease
from django_bridge.transports import get_transport
from realtime.envelope import Envelope
from realtime.errors import BrokerUnavailable, PublishError

logger = logging.getLogger(__name__)

LEASE_NAME = "default"
HOLDER = f"{socket.gethostname()}:{os.getpid()}"


def _db(using: str | None) -> str:
    return using or router.db_for_write(OutboxEvent)


def _take_lease(db: str) -> bool:
    """Lock the lease row for this transaction; False if another relay holds it."""
    now = timezone.now()
    if connections[db].features.has_select_for_update_skip_locked:
        lease = (
            RelayLease.objects.using(db)
            .select_for_update(skip_locked=True)
            .filter(name=LEASE_NAME)
            .first()
        )
        if lease is None:
            return False
        RelayLease.objects.using(db).filter(name=LEASE_NAME).update(holder=HOLDER, heartbeat=now)
        return True
    try:
        return bool(
            RelayLease.objects.using(db)
            .filter(name=LEASE_NAME)
            .update(holder=HOLDER, heartbeat=now)
        )
    except OperationalError as exc:  # SQLite: "database is locked" by another writer
        logger.debug("relay lease busy: %s", exc)
        return False


def _envelope(row: OutboxEvent) -> Envelope:
    return Envelope(
        channel=row.channel,
        type=row.type,
        data_json=row.data.encode(),
        state=row.state,
        id=row.envelope_id,
    )


def relay_batch(using: str | None = None, batch: int | None = None) -> int:
    """Send one batch of pending rows (one attempt); return how many were handled.

    Returns 0 when nothing is pending or another relay holds the lease.

    Raises:
        BrokerUnavailable: nothing of this batch is marked sent.
    """
    db = _db(using)
    size = batch or get_settings().outbox_batch
    RelayLease.objects.using(db).get_or_create(name=LEASE_NAME)
    with transaction.atomic(using=db):
        if not _take_lease(db):
            return 0
        rows = list(
            OutboxEvent.objects.using(db).filter(sent_at__isnull=True).order_by("id")[:size]
        )
        if not rows:
            return 0
        transport = get_transport()
        now = timezone.now()
        try:
            transport.send([_envelope(row) for row in rows])
        except PublishError:
            # one bad row must not block the rest: find it by sending one at a time
            for row in rows:
                try:
                    transport.send([_envelope(row)])
                except PublishError as exc:
                    logger.error("outbox row %s rejected, dropped: %s", row.pk, exc)
                    OutboxEvent.objects.using(db).filter(pk=row.pk).update(
                        sent_at=now, error=str(exc)[:1000]
                    )
                else:
                    OutboxEvent.objects.using(db).filter(pk=row.pk).update(sent_at=now)
            return len(rows)
        OutboxEvent.objects.using(db).filter(pk__in=[row.pk for row in rows]).update(sent_at=now)
        return len(rows)


def pending_count(using: str | None = None) -> int:
    """Return how many outbox rows wait to be sent."""
    return OutboxEvent.objects.using(_db(using)).filter(sent_at__isnull=True).count()


def purge_sent(older_than: timedelta, using: str | None = None) -> int:
    """Delete rows sent more than ``older_than`` ago; return how many."""
    cutoff = timezone.now() - older_than
    deleted, _ = OutboxEvent.objects.using(_db(using)).filter(sent_at__lt=cutoff).delete()
    return deleted


def run_relay(
    using: str | None = None,
    batch: int | None = None,
    *,
    purge_after: float = 3600.0,
    max_backoff: float = 30.0,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Send pending rows until ``stop()`` is true (checked between batches).

    A broker outage of any length only delays the rows: each failed batch is rolled back
    and retried after a jittered back-off doubling from 0.5 s to ``max_backoff`` seconds.
    A lost database connection is retried the same way. Sent rows older than
    ``purge_after`` seconds are deleted once a minute (0 keeps them).
    """
    poll = get_settings().outbox_poll
    backoff = 0.5
    last_purge = 0.0
    logger.info("realtime relay %s started", HOLDER)
    while not stop():
        try:
            sent = relay_batch(using, batch)
        except (BrokerUnavailable, OperationalError, InterfaceError) as exc:
            # OperationalError: the database went away; Django reconnects on the next query
            logger.warning("realtime relay: %s, retrying: %s", type(exc).__name__, exc)
            connections[_db(using)].close_if_unusable_or_obsolete()
            time.sleep(min(backoff, max_backoff) * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, max_backoff)
            continue
        backoff = 0.5
        if purge_after > 0 and time.monotonic() - last_purge > 60:
            purge_sent(timedelta(seconds=purge_after), using)
            last_purge = time.monotonic()
        if not sent:
            time.sleep(poll)
