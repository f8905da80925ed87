"""Prometheus metrics of one server process (prometheus-client, private registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Every metric the server exports; pass one instance to the node and handlers."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connections = Gauge("realtime_connections", "Open WebSocket connections", registry=r)
        self.subscriptions = Gauge(
            "realtime_subscriptions", "Channel subscriptions of all connections", registry=r
        )
        self.channels = Gauge("realtime_channels", "Channels with local subscribers", registry=r)
        self.messages_in = Counter(
            "realtime_messages_in", "Client commands received", registry=r
        )
        self.events_in = Counter(
            "realtime_events_in", "Events received from the broker", registry=r
        )
        self.published = Counter(
            "realtime_published", "Envelopes published through this process", registry=r
        )
        self.messages_out = Counter(
            "realtime_messages_out", "Frames queued to clients (events and replies)", registry=r
        )
        self.bytes_out = Counter("realtime_bytes_out", "Bytes queued to clients", registry=r)
        self.slow_consumers = Counter(
            "realtime_slow_consumers_dropped", "Clients cut off at the send buffer limit", registry=r
        )
        self.auth_failures = Counter(
            "realtime_auth_failures", "Refused auth and subscribe commands", ["code"], registry=r
        )
        self.broker_reconnects = Counter(
            "realtime_broker_reconnects", "Broker connections re-established", registry=r
        )
        self.broker_up = Gauge("realtime_broker_up", "1 while the broker is connected", registry=r)
        self.gaps_filled = Counter(
            "realtime_gaps_filled", "Offset gaps filled from history", registry=r
        )
        self.resyncs = Counter(
            "realtime_resyncs", "Channels resynced from state (history lost)", registry=r
        )
        self.latency = Histogram(
            "realtime_publish_to_send_seconds",
            "Time from publish to the write of an event to its subscribers",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        """Return the Prometheus text exposition."""
        return generate_latest(self.registry)
