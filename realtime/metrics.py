"""Prometheus metrics of the server (prometheus-client, private registry).

One process: the values live in this process and ``render`` exports them. Under
``--workers N`` the supervisor (``realtime.workers``) calls ``enable_multiprocess`` in
each worker before its ``Metrics`` is built: values then live in per-process files in
``PROMETHEUS_MULTIPROC_DIR`` and ``render``, in whichever worker answers the scrape,
merges every worker's files, so ``/metrics`` shows the totals of the whole server.
Counters of a dead worker stay counted (they never go backwards); its gauges drop out
(``mark_dead``).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def enable_multiprocess(path: str) -> None:
    """Keep the values of metrics built from now on in files under ``path``.

    Call in a freshly forked worker, before it builds its ``Metrics``. prometheus-client
    picks its value class when it is first imported (from the environment), which in a
    forked worker happened in the parent; replacing it is how a fork opts in.
    """
    os.environ[MULTIPROC_ENV] = path
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def multiprocess_dir() -> str | None:
    """Return the shared metrics directory when this process writes to one."""
    if getattr(values.ValueClass, "_multiprocess", False):
        return os.environ.get(MULTIPROC_ENV)
    return None


def mark_dead(pid: int, path: str) -> None:
    """Drop the live gauges of a worker that exited (the supervisor calls this)."""
    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


class Metrics:
    """Every metric the server exports; pass one instance to the node and handlers."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # gauges: "livesum" adds up the workers that are alive now
        self.connections = Gauge(
            "realtime_connections",
            "Open WebSocket connections",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.subscriptions = Gauge(
            "realtime_subscriptions",
            "Channel subscriptions of all connections",
            registry=r,
            multiprocess_mode="livesum",
        )
        # a channel subscribed in two workers counts twice: each holds a broker subscription
        self.tracked_channels = Gauge(
            "realtime_tracked_channels",
            "Channels the node receives: with local subscribers or in their unsubscribe grace",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.stored_channels = Gauge(
            "realtime_stored_channels",
            "Channels kept in this process's own store (memory:// and amqp without Redis)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.channels = Gauge(
            "realtime_channels",
            "Channels with local subscribers (summed over worker processes)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.messages_in = Counter("realtime_messages_in", "Client commands received", registry=r)
        self.events_in = Counter(
            "realtime_events_in", "Events received from the broker", registry=r
        )
        self.published = Counter(
            "realtime_published", "Envelopes published through this server", registry=r
        )
        self.messages_out = Counter(
            "realtime_messages_out", "Frames queued to clients (events and replies)", registry=r
        )
        self.bytes_out = Counter("realtime_bytes_out", "Bytes queued to clients", registry=r)
        self.slow_consumers = Counter(
            "realtime_slow_consumers_dropped",
            "Clients cut off at the send buffer limit",
            registry=r,
        )
        self.refused_connections = Counter(
            "realtime_refused_connections",
            "Handshakes refused (limits, connect rate, shutdown)",
            registry=r,
        )
        self.refused_origins = Counter(
            "realtime_refused_origins",
            "Handshakes refused by the Origin check (403; see REALTIME_ALLOWED_ORIGINS)",
            registry=r,
        )
        self.frames_skipped = Counter(
            "realtime_frames_skipped",
            "Coalesced frames replaced by a newer one for a congested watcher (latest wins)",
            registry=r,
        )
        self.closes = Counter(
            "realtime_closes",
            "WebSocket connections closed, by close code (1006: dropped without one)",
            ["code"],
            registry=r,
        )
        self.auth_failures = Counter(
            "realtime_auth_failures", "Refused auth and subscribe commands", ["code"], registry=r
        )
        self.broker_reconnects = Counter(
            "realtime_broker_reconnects", "Broker connections re-established", registry=r
        )
        # "livemin": 1 only while every live worker has its broker connection
        self.broker_up = Gauge(
            "realtime_broker_up",
            "1 while the broker is connected (in every worker)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.gaps_filled = Counter(
            "realtime_gaps_filled", "Offset gaps filled from history", registry=r
        )
        self.resyncs = Counter(
            "realtime_resyncs", "Channels resynced from state (history lost)", registry=r
        )
        self.store_rollbacks = Counter(
            "realtime_store_rollbacks",
            "Channels whose store went back to an older offset (given a new epoch)",
            registry=r,
        )
        self.misconfigured = Counter(
            "realtime_misconfigured",
            "Messages that reveal a setup mismatch (e.g. raw AMQP envelopes while nodes "
            "number events in Redis)",
            ["reason"],
            registry=r,
        )
        self.churn_refused = Counter(
            "realtime_churn_refused",
            "Subscribes refused for subscribing to too many distinct channels too fast",
            registry=r,
        )
        self.latency = Histogram(
            "realtime_publish_to_send_seconds",
            "Time from publish to the write of an event to its subscribers",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        """Return the Prometheus text exposition (of every worker under ``--workers``)."""
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


class SupervisorMetrics:
    """Metrics the ``--workers`` supervisor writes into the shared directory."""

    def __init__(self) -> None:
        registry = CollectorRegistry()
        self.worker_restarts = Counter(
            "realtime_worker_restarts",
            "Worker processes restarted after they died",
            registry=registry,
        )
        self.workers = Gauge(
            "realtime_workers",
            "Worker processes running",
            registry=registry,
            multiprocess_mode="livesum",
        )
