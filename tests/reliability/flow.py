"""Event-flow bookkeeping for fault tests: a steady publisher and per-client checkers.

A ``Tracker`` follows one client's view of one channel and records every violation of the
contract's guarantee: each event is the previous offset + 1 within an epoch (exactly once,
in order), and a jump is only allowed through a ``subscribed`` message (a resync).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import urllib.error
from dataclasses import dataclass, field
from typing import Any

import websockets

from tests.client import Client
from tests.conftest import ServerProcess


@dataclass
class Tracker:
    """One client's position in one channel and what went wrong."""

    channel: str
    epoch: str | None = None
    offset: int = 0
    events: int = 0
    resyncs: int = 0  # `subscribed` pushed unasked with recovered:false (history lost)
    recoveries: int = 0  # re-subscribed with `since` and got recovered:true
    violations: list[str] = field(default_factory=list)

    def on_message(self, msg: dict[str, Any], asked: bool = False) -> None:
        if msg.get("channel") != self.channel:
            return
        op = msg["op"]
        if op == "subscribed":
            if asked and msg.get("recovered"):
                self.recoveries += 1
                if msg["epoch"] != self.epoch:
                    self.violations.append(f"recovered across epochs {self.epoch}->{msg['epoch']}")
                for event in msg.get("missed") or ():
                    self._event(event)
            elif asked and self.epoch is not None and "missed" in msg:
                self.resyncs += 1  # asked to recover, could not: a resync from state
            elif not asked and msg.get("recovered") and msg["offset"] == 0:
                # the epoch the channel's first event starts: nothing missed
                if self.offset != 0:
                    self.violations.append(f"epoch notice at offset {self.offset}")
            elif not asked:
                self.resyncs += 1
            self.epoch, self.offset = msg["epoch"], msg["offset"]
        elif op == "event":
            self._event(msg)

    def _event(self, event: dict[str, Any]) -> None:
        self.events += 1
        if event["offset"] != self.offset + 1:
            self.violations.append(f"offset {event['offset']} after {self.offset}")
        self.offset = max(self.offset, event["offset"])

    def since(self) -> dict[str, Any] | None:
        return None if self.epoch is None else {"epoch": self.epoch, "offset": self.offset}


class Publisher(threading.Thread):
    """Publish one event every ``interval`` seconds over HTTP; remember the last success."""

    def __init__(self, server: ServerProcess, channel: str, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.channel = channel
        self.interval = interval
        self.stopped = threading.Event()
        self.last: tuple[str, int] | None = None
        self.ok = 0
        self.failed = 0

    def run(self) -> None:
        n = 0
        while not self.stopped.is_set():
            n += 1
            try:
                answer = self.server.publish(
                    {"channel": self.channel, "type": "t", "data": {"n": n}}
                )
                result = answer["results"][0]
                self.last = (result["epoch"], result["offset"])
                self.ok += 1
            except (urllib.error.URLError, OSError, KeyError):
                self.failed += 1  # broker or server down: the publisher sees it, nothing lost
            time.sleep(self.interval)

    def stop(self) -> tuple[str, int]:
        self.stopped.set()
        self.join(10)
        assert self.last is not None, "nothing was published"
        return self.last


async def follow(url: str, tracker: Tracker, until: asyncio.Event, reconnect: bool = False) -> int:
    """Subscribe and feed every message to ``tracker`` until ``until`` is set.

    With ``reconnect`` a lost connection is re-opened (jittered 0.1-0.3 s) and the channel
    re-subscribed with ``since``. Returns how many times it reconnected.
    """
    reconnects = 0
    while not until.is_set():
        try:
            client = await Client.open(url)
        except (OSError, websockets.InvalidStatus, websockets.InvalidHandshake):
            if not reconnect:
                raise
            await asyncio.sleep(random.uniform(0.1, 0.3))
            continue
        try:
            extra = {"since": tracker.since()} if tracker.since() else {}
            tracker.on_message(await client.subscribe(tracker.channel, **extra), asked=True)
            while not until.is_set():
                try:
                    msg = await client.recv(0.2)
                except TimeoutError:
                    continue
                tracker.on_message(msg)
        except websockets.ConnectionClosed:
            if not reconnect:
                raise
            reconnects += 1
        finally:
            await client.ws.close()
    return reconnects
