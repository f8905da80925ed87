"""Realtime push server for Django sites: Tornado WebSocket fan-out over Redis or RabbitMQ."""

__version__ = "0.1.0"
