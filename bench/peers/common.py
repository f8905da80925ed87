"""Shared bits of the peer servers: command line and the subscribed reply."""

from __future__ import annotations

import argparse
import resource
from typing import Any


def peer_parser(description: str) -> argparse.ArgumentParser:
    """Return the common ``--host --port --redis-url --prefix`` parser of a peer."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8890)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--prefix", default="bench:", help="Redis prefix / channel name")
    return parser


def raise_fd_limit() -> None:
    """Allow as many sockets as the hard limit permits (10,000 connections need it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def subscribed_reply(channel: str) -> dict[str, Any]:
    """Return the ``subscribed`` reply the peers send (no history: offset 0, no state)."""
    return {
        "op": "subscribed",
        "channel": channel,
        "epoch": "peer",
        "offset": 0,
        "state": None,
        "missed": [],
        "recovered": False,
    }


def split_redis_message(prefix: str, pubsub_channel: bytes, message: bytes) -> tuple[str, bytes]:
    """Return (channel, event JSON) of a realtime-layout pub/sub message.

    The pub/sub channel is ``<prefix>{<channel>}`` and the message a few space-separated
    fields (epoch, offset, ...) then the event JSON (realtime/brokers/redis_layout.py); the
    JSON is everything from the first ``{``, so a new field does not break the peers.
    """
    channel = pubsub_channel.decode()[len(prefix) + 1 : -1]
    return channel, message[message.index(b"{") :]
