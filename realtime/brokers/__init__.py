"""Brokers: ``create_broker(settings)`` picks the implementation from ``broker_url``."""

from __future__ import annotations

import importlib

from realtime.brokers.base import Broker
from realtime.config import Settings

BROKER_MODULES = {
    "memory": "realtime.brokers.memory",
    "redis+cluster": "realtime.brokers.redis_cluster",
    "rediss+cluster": "realtime.brokers.redis_cluster",
    "redis": "realtime.brokers.redis",
    "rediss": "realtime.brokers.redis",
    "redis+sentinel": "realtime.brokers.redis",
    "amqp": "realtime.brokers.rabbitmq",
    "amqps": "realtime.brokers.rabbitmq",
}


def preload_broker(settings: Settings) -> None:
    """Import the broker's module (and its client library) now, before workers fork."""
    module = BROKER_MODULES.get(settings.broker_url.split("://", 1)[0])
    if module is not None:
        importlib.import_module(module)


def create_broker(settings: Settings) -> Broker:
    """Return the broker for ``settings.broker_url`` (not started yet)."""
    scheme = settings.broker_url.split("://", 1)[0]
    if scheme == "memory":
        from realtime.brokers.memory import MemoryBroker

        return MemoryBroker(settings.history_size, settings.history_ttl, settings.meta_ttl)
    if scheme in ("redis+cluster", "rediss+cluster"):
        from realtime.brokers.redis_cluster import RedisClusterBroker

        cluster: Broker = RedisClusterBroker(
            settings.broker_url,
            settings.redis_prefix,
            settings.history_size,
            settings.history_ttl,
            settings.meta_ttl,
        )
        return cluster
    if scheme in ("redis", "rediss", "redis+sentinel"):
        from realtime.brokers.redis import RedisBroker

        return RedisBroker(
            settings.broker_url,
            settings.redis_prefix,
            settings.history_size,
            settings.history_ttl,
            settings.meta_ttl,
        )
    if scheme in ("amqp", "amqps"):
        from realtime.brokers.rabbitmq import RabbitMQBroker

        broker: Broker = RabbitMQBroker(settings)
        return broker
    raise ValueError(f"unsupported broker URL scheme {scheme!r}")  # config validated it
