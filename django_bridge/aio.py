"""``apublish`` and ``arealtime_token``: the bridge from async views and ASGI deployments.

``publish`` talks to the broker with blocking sockets and retries with ``time.sleep``: called
from an async view it would stall the event loop, and every request it serves, for up to
``RETRIES`` x ``TIMEOUT``. ``apublish`` runs the same ``send`` (same retries, same logging,
same transports) in a worker thread, so the loop keeps serving while a broker is slow.

There is no ``transaction.atomic`` in async code (Django runs the ORM in a thread). To publish
on commit, do the database work and ``publish`` in one sync function and await it::

    @sync_to_async
    def judge(submission_id):
        with transaction.atomic():
            ...
            publish(f"submission:{submission_id}", "judge.verdict", data, state=True)

    await judge(submission_id)   # sent after the commit, from that worker thread
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from asgiref.sync import sync_to_async

from django_bridge.conf import get_settings
from django_bridge.publishing import make_envelope, send
from django_bridge.tokens import realtime_token


async def apublish(
    channel: str,
    type: str,  # the contract's name, as in publish()
    data: Any,
    state: bool = False,
    *,
    using: str | None = None,
    envelope_id: str | None = None,
) -> None:
    """Publish an event from async code without blocking the event loop.

    Sent at once (async code has no open transaction to wait for), in a worker thread with
    ``publish``'s retries; with ``REALTIME['OUTBOX']`` the row is written through the async
    ORM and ``realtime_relay`` sends it. Inside a sync function under ``transaction.atomic``
    use ``publish`` instead (see the module docstring).

    Raises:
        PublishError: invalid channel, type or data (raised before anything is sent).
        BrokerUnavailable: only with ``RAISE_ON_ERROR``, when every attempt failed.
    """
    envelope = make_envelope(channel, type, data, state, envelope_id)  # also the namespace check
    if get_settings().outbox:
        from django_bridge.models import OutboxEvent

        await OutboxEvent.objects.using(using).acreate(
            channel=envelope.channel,
            type=envelope.type,
            data=envelope.data_json.decode(),
            state=envelope.state,
            envelope_id=envelope.id or "",
        )
        return
    # thread_sensitive=False: a slow broker must not hold Django's one sync thread either
    await sync_to_async(send, thread_sensitive=False)([envelope])


async def arealtime_token(
    user: Any, channels: Iterable[str] | None = None, ttl: int | None = None
) -> str:
    """Sign a connection token from async code; see ``realtime_token``.

    ``request.user`` in an async view is a lazy object that queries the database when
    touched, which Django forbids on the event loop: the token is built in the sync thread.
    (``await request.auser()`` first avoids that hop.)
    """
    listed = list(channels) if channels is not None else None
    token: str = await sync_to_async(realtime_token)(user, listed, ttl)
    return token
