"""``publish()``: validate an event, then send it on commit (or store it in the outbox).

Sending is bounded: ``RETRIES`` more attempts after the first, with doubling back-off from
``RETRY_BACKOFF`` seconds, and none at all while the circuit breaker is open (see
``django_bridge.breaker``); past that the event is logged as lost (ERROR), counted
(``lost_events()``) and, only with ``RAISE_ON_ERROR``, the error is raised.
Every envelope carries a fresh id, so a retry after a half-finished attempt is stored and
delivered once.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson
from django.db import transaction
from django.utils.functional import Promise

from django_bridge.breaker import CircuitOpen, get_breaker
from django_bridge.conf import get_settings
from django_bridge.serverinfo import note_channel
from django_bridge.transports import get_transport
from realtime.envelope import CHANNEL_RE, MAX_TYPE_LENGTH, Envelope, Published, check_version
from realtime.errors import BrokerUnavailable, PublishError

logger = logging.getLogger(__name__)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Promise):  # lazy translation strings
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def make_envelope(
    channel: str,
    type_: str,
    data: Any,
    state: bool = False,
    envelope_id: str | None = None,
    version: int | None = None,
) -> Envelope:
    """Validate and encode one event (``version``: see ``publish``).

    Raises:
        PublishError: a bad channel name, type or version, or data that cannot be encoded.
    """
    if not isinstance(channel, str) or not CHANNEL_RE.fullmatch(channel):
        raise PublishError(f"invalid channel name: {channel!r}")
    if not isinstance(type_, str) or not 0 < len(type_) <= MAX_TYPE_LENGTH:
        raise PublishError("type must be a non-empty string of at most 200 characters")
    note_channel(channel)  # warns once per process if the server lacks the namespace
    try:
        data_json = orjson.dumps(data, default=_json_default)
    except TypeError as exc:
        raise PublishError(f"data cannot be encoded as JSON: {exc}") from exc
    return Envelope(
        channel=channel,
        type=type_,
        data_json=data_json,
        state=bool(state),
        id=envelope_id or uuid.uuid4().hex,
        version=check_version(version, bool(state)),
    )


def publish(
    channel: str,
    type: str,  # the contract's name (PROTOCOL.md section 7)
    data: Any,
    state: bool = False,
    *,
    using: str | None = None,
    envelope_id: str | None = None,
    version: int | None = None,
) -> None:
    """Publish an event to a channel.

    ``version`` (with ``state=True``) orders the channel's states: the store keeps the
    state with the highest version and drops an older one that arrives later (two
    processes publishing in the opposite order of their changes). The outbox does not keep
    versions: with ``OUTBOX`` the relay publishes in outbox order, unversioned.

    Inside ``transaction.atomic()`` (on database ``using``) the event is sent after the
    outermost block commits and never if it rolls back; outside one it is sent at once. With
    ``REALTIME['OUTBOX']`` it is written to the outbox table in the current transaction and
    the ``realtime_relay`` command sends it.

    Raises:
        PublishError: invalid channel, type or data (always raised: a bug in the caller).
        BrokerUnavailable: only with ``RAISE_ON_ERROR``, when every attempt failed.
    """
    envelope = make_envelope(channel, type, data, state, envelope_id, version)
    if get_settings().outbox:
        from django_bridge.models import OutboxEvent

        OutboxEvent.objects.using(using).create(
            channel=envelope.channel,
            type=envelope.type,
            data=envelope.data_json.decode(),
            state=envelope.state,
            envelope_id=envelope.id or "",  # make_envelope always sets one
        )
        return
    if transaction.get_connection(using).in_atomic_block:
        transaction.on_commit(lambda: send([envelope]), using=using)
    else:
        send([envelope])


def send(envelopes: Sequence[Envelope]) -> list[Published] | None:
    """Send now, with bounded retries; return the results, or None when the send failed.

    A result's ``duplicate`` is true only when the store or server had the id before this
    call: a duplicate found by a retry is this call's own half-finished first attempt, and
    counts as published (the transport sent it again). While the circuit breaker is open
    nothing is attempted, so a call costs at most ``min(RETRIES + 1, BREAKER_THRESHOLD)``
    attempts of at most ``TIMEOUT`` each, plus the back-off between them.

    Raises:
        BrokerUnavailable, PublishError: only with ``RAISE_ON_ERROR``.
    """
    settings = get_settings()
    delay = settings.retry_backoff
    attempt = 0
    while True:
        try:
            results = get_transport().send(envelopes)
        except CircuitOpen as exc:
            _failed(envelopes, exc, settings.raise_on_error)
            return None
        except BrokerUnavailable as exc:
            # the breaker opening on this failure ends the call: no back-off, no attempt
            if attempt >= settings.retries or get_breaker().is_open():
                _failed(envelopes, exc, settings.raise_on_error)
                return None
            logger.warning("realtime publish attempt %d failed: %s", attempt + 1, exc)
        except PublishError as exc:
            _failed(envelopes, exc, settings.raise_on_error)
            return None
        else:
            if attempt:
                results = [dataclasses.replace(r, duplicate=False) for r in results]
            return results
        attempt += 1
        _sleep(delay * random.uniform(0.5, 1.5))  # jitter: workers must not retry in step
        delay = min(delay * 2, 5.0)


_sleep = time.sleep  # the tests' seam to count back-off without waiting
_lost_lock = threading.Lock()
_lost = 0


def lost_events() -> int:
    """Return how many events this process failed to send (logged as lost) so far."""
    return _lost


def _failed(envelopes: Sequence[Envelope], exc: Exception, raise_it: bool) -> None:
    global _lost
    with _lost_lock:
        _lost += len(envelopes)
    channels = sorted({env.channel for env in envelopes})
    logger.error(
        "realtime publish failed, %d event(s) lost for %s: %s",
        len(envelopes),
        ", ".join(channels),
        exc,
    )
    if raise_it:
        raise exc
