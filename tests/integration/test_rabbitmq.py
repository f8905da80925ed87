"""RabbitMQ-specific behaviour: lost connections, several nodes, direct publishers.

Real ``realtime serve`` processes on the shared RabbitMQ, each test on its own exchange.
A connection is force-closed with ``rabbitmqctl close_connection`` on that one server's
connection only (found by its ``connection_name``); an outage is made with a TCP proxy
between one server and RabbitMQ that the test cuts and restores. The shared broker is never
stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pika
import pytest
import redis

from realtime.brokers import amqp_layout, redis_layout
from realtime.envelope import Envelope
from tests.client import Client
from tests.conftest import ServerProcess, free_port, make_token

pytestmark = [pytest.mark.broker, pytest.mark.timeout(90)]

STORES = ["redis-store", "node-store"]


@pytest.fixture(params=STORES)
def settings(request: pytest.FixtureRequest, exchange: str, amqp_url: str) -> dict[str, str]:
    """Server settings on the test exchange, with the Redis store or the node-local one."""
    values = {"broker_url": amqp_url, "amqp_exchange": exchange}
    if request.param == "redis-store":
        values["redis_url"] = request.getfixturevalue("redis_url")
        values["redis_prefix"] = request.getfixturevalue("prefix")
    return values


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def close_amqp_connection(exchange: str, server: ServerProcess) -> None:
    """Force-close (from the broker side) the one AMQP connection of ``server``."""
    if shutil.which("rabbitmqctl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("rabbitmqctl is needed to close a connection")
        pytest.skip("rabbitmqctl is not installed")
    marker = f"realtime {exchange} pid {server.pid} "
    listing = subprocess.run(
        ["rabbitmqctl", "list_connections", "-q", "pid", "client_properties"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    pids = [line.split("\t", 1)[0] for line in listing.splitlines() if marker in line]
    assert len(pids) == 1, f"expected one connection named {marker!r}, found {len(pids)}"
    subprocess.run(
        ["rabbitmqctl", "close_connection", pids[0], "test: forced close"],
        capture_output=True,
        timeout=30,
        check=True,
    )


def connects(server: ServerProcess) -> int:
    """How many times the server's broker link came up (from its log)."""
    return server.log().count("rabbitmq broker connected")


def envelope(chan: str, n: int) -> dict[str, Any]:
    return {"channel": chan, "type": "tick", "data": {"n": n}}


class Publisher:
    """Publishes numbered envelopes through one server's HTTP API in a background thread."""

    def __init__(self, server: ServerProcess, chan: str) -> None:
        self.server = server
        self.chan = chan
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.server.publish(envelope(self.chan, self.sent))
            self.sent += 1
            time.sleep(0.01)

    def wait_sent(self, count: int, timeout: float = 20) -> None:
        wait_for(lambda: self.sent >= count, timeout, f"{count} publishes")


async def collect_until(
    client: Client, stop: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Read messages (events and unasked ``subscribed``) until ``stop(messages)``."""
    out: list[dict[str, Any]] = []
    while not stop(out):
        out.append(await client.recv(timeout=15))
    return out


def test_subscribers_keep_receiving_after_a_forced_close(
    settings: dict[str, str], server_factory: Any
) -> None:
    """After the broker closes a node's connection mid-stream its subscribers go on receiving."""
    exchange = settings["amqp_exchange"]
    # history must outlast the outage for the Redis store to fill the gap
    node = server_factory(**settings, history_size="1000")
    publisher_node = server_factory(**settings, history_size="1000")
    chan = f"contest:{uuid.uuid4().hex[:10]}"

    async def run() -> list[dict[str, Any]]:
        async with await Client.open(node.ws_url) as client:
            await client.subscribe(chan)
            with Publisher(publisher_node, chan) as pub:
                pub.wait_sent(30)
                await asyncio.to_thread(close_amqp_connection, exchange, node)
                await asyncio.to_thread(wait_for, lambda: connects(node) >= 2, 30, "reconnect")
                after = pub.sent
                pub.wait_sent(after + 30)
            total = pub.sent
            return await collect_until(
                client, lambda ms: any(m.get("data", {}).get("n") == total - 1 for m in ms)
            )

    # the unasked notice of the epoch a channel's first event starts is no resync
    messages = [
        m
        for m in asyncio.run(run())
        if not (m["op"] == "subscribed" and m.get("recovered") and m["offset"] == 0)
    ]
    events = [m for m in messages if m["op"] == "event"]
    if "redis_url" in settings:
        # one store for every node: the gap is filled from history, nothing is lost
        assert [e["offset"] for e in events] == list(range(1, len(events) + 1))
        assert [e["data"]["n"] for e in events] == list(range(len(events)))
        assert all(m["op"] == "event" for m in messages)
    else:
        # a node-local store cannot know what it missed: a new epoch and a resync
        resyncs = [i for i, m in enumerate(messages) if m["op"] == "subscribed"]
        assert len(resyncs) == 1 and messages[resyncs[0]]["recovered"] is False
        tail = [m for m in messages[resyncs[0] + 1 :] if m["op"] == "event"]
        assert len(tail) >= 30
        assert [e["offset"] for e in tail] == list(range(tail[0]["offset"], tail[-1]["offset"] + 1))
        numbers = [e["data"]["n"] for e in tail]
        assert numbers == list(range(numbers[0], numbers[-1] + 1))


def test_two_servers_both_deliver(settings: dict[str, str], server_factory: Any) -> None:
    """Two server processes on one exchange deliver each other's publishes to their clients."""
    one = server_factory(**settings)
    two = server_factory(**settings)
    chan = f"contest:{uuid.uuid4().hex[:10]}"

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with await Client.open(one.ws_url) as a, await Client.open(two.ws_url) as b:
            await a.subscribe(chan)
            await b.subscribe(chan)
            for i in range(10):
                await asyncio.to_thread((one if i % 2 else two).publish, envelope(chan, i))
            return await a.events(10), await b.events(10)

    seen_a, seen_b = asyncio.run(run())
    assert [e["data"]["n"] for e in seen_a] == list(range(10))
    assert [e["data"]["n"] for e in seen_b] == list(range(10))
    assert [e["offset"] for e in seen_a] == [e["offset"] for e in seen_b] == list(range(1, 11))


class Proxy:
    """A TCP forwarder a test can cut (drop every link, refuse new ones) and restore."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._thread: threading.Thread | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(0.1)
        self._running.set()
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def cut(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while self._running.is_set():
                try:
                    downstream, _ = listener.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection(self.target)
                downstream.settimeout(None)
                with self._lock:
                    self._sockets += [downstream, upstream]
                for src, dst in ((downstream, upstream), (upstream, downstream)):
                    threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@pytest.fixture
def proxied_url(amqp_url: str) -> Iterator[tuple[str, Proxy]]:
    """An AMQP URL that goes through a cuttable proxy to the real RabbitMQ."""
    parts = urlsplit(amqp_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
    yield urlunsplit(parts._replace(netloc=netloc)), proxy
    proxy.cut()


def test_healthz_is_503_while_rabbitmq_is_unreachable(
    exchange: str, proxied_url: tuple[str, Proxy], server_factory: Any
) -> None:
    """/healthz answers 503 while the link is down and 200 again once it is back."""
    url, proxy = proxied_url
    server = server_factory(broker_url=url, amqp_exchange=exchange)
    assert server.get("/healthz")[0] == 200
    proxy.cut()
    wait_for(lambda: server.get("/healthz")[0] == 503, 10, "/healthz 503")
    status, body = server.get("/healthz")
    assert status == 503 and b"broker not connected" in body
    proxy.restore()
    wait_for(lambda: server.get("/healthz")[0] == 200, 40, "/healthz 200 again")


def test_publish_is_503_while_rabbitmq_is_unreachable(
    exchange: str, proxied_url: tuple[str, Proxy], server_factory: Any
) -> None:
    """POST /api/publish answers 503 (not a hang, not a crash) while the link is down."""
    url, proxy = proxied_url
    server = server_factory(broker_url=url, amqp_exchange=exchange)
    proxy.cut()
    wait_for(lambda: server.get("/healthz")[0] == 503, 10, "/healthz 503")
    with pytest.raises(Exception, match="503"):
        server.publish(envelope("contest:1", 1))
    proxy.restore()
    wait_for(lambda: server.get("/healthz")[0] == 200, 40, "/healthz 200 again")
    assert server.publish(envelope("contest:1", 2))["results"][0]["offset"] >= 1


def test_direct_publisher_reaches_subscribers(
    settings: dict[str, str], server_factory: Any
) -> None:
    """A publisher that follows docs/RABBITMQ.md (no bridge, no server API) is delivered."""
    server = server_factory(**settings)
    chan = f"submission:{uuid.uuid4().hex[:10]}"

    async def run() -> dict[str, Any]:
        async with await Client.open(server.ws_url) as client:
            await client.auth(make_token("judge", channels=[chan]))
            assert (await client.subscribe(chan))["op"] == "subscribed"
            # numbered after subscribing: an offset the subscriber already has is skipped
            body = await asyncio.to_thread(_direct_body, settings, chan)
            await asyncio.to_thread(_amqp_publish, settings, chan, body)
            assert orjson.loads(body)["v"] == 1
            [event] = await client.events(1)
            return event

    event = asyncio.run(run())
    assert event["data"] == {"verdict": "AC"} and event["type"] == "judge.verdict"


def _direct_body(settings: dict[str, str], chan: str) -> bytes:
    """Build a message body the way docs/RABBITMQ.md tells other publishers to."""
    envelope_ = Envelope(chan, "judge.verdict", b'{"verdict":"AC"}', state=True)
    if "redis_url" in settings:
        store = redis.Redis.from_url(settings["redis_url"])
        keys, args = redis_layout.publish_args(
            settings["redis_prefix"],
            channel=chan,
            type_=envelope_.type,
            data_json=envelope_.data_json,
            state=True,
            envelope_id=None,
            history_size=100,
            history_ttl=600,
            meta_ttl=86400,
            now_ms=int(time.time() * 1000),
            do_publish=False,
        )
        epoch, offset, _, event = store.eval(redis_layout.PUBLISH_SCRIPT, len(keys), *keys, *args)
        store.close()
        return amqp_layout.encode_numbered(epoch.decode(), int(offset), event)
    return amqp_layout.encode_raw(envelope_)


def _amqp_publish(settings: dict[str, str], chan: str, body: bytes) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(settings["broker_url"]))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            settings["amqp_exchange"],
            amqp_layout.routing_key(chan),
            body,
            pika.BasicProperties(
                content_type=amqp_layout.CONTENT_TYPE, delivery_mode=amqp_layout.DELIVERY_MODE
            ),
        )
    finally:
        connection.close()


def test_event_stored_but_not_sent_goes_out_after_the_reconnect(
    exchange: str, amqp_url: str, redis_url: str, prefix: str
) -> None:
    """The send after the Redis store write fails (the link drops): the publish is answered
    as stored, and the event goes to the exchange once the link is back (found by the
    chaos run: publishers without an id otherwise left it unsent for good)."""
    import pika

    from realtime.brokers.rabbitmq import RabbitMQBroker
    from realtime.config import Settings
    from realtime.envelope import Envelope

    settings = Settings(
        secret="s" * 32,
        broker_url=amqp_url,
        amqp_exchange=exchange,
        redis_url=redis_url,
        redis_prefix=prefix,
    )
    chan = f"contest:{uuid.uuid4().hex[:10]}"

    steps: list[str] = []  # where a hang happened, for the failure message

    def watch() -> tuple[Any, Any, str]:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, exchange, routing_key=chan)
        return connection, channel, queue

    async def scenario() -> tuple[int, list[bytes]]:
        broker = RabbitMQBroker(settings)
        healthy = asyncio.Event()
        await broker.start(lambda event: None, lambda up: healthy.set() if up else None)
        await asyncio.wait_for(healthy.wait(), 20)
        steps.append("connected")
        link = broker._link
        assert link is not None
        real_publish = link.publish

        def failing(*args: Any) -> Any:
            raise ConnectionError("link lost in the middle of the send")

        link.publish = failing  # type: ignore[method-assign]
        published = await asyncio.wait_for(
            broker.publish(Envelope(chan, "t", b"1", False, None)), 10
        )
        steps.append("stored")
        assert broker._unsent, "the stored event must wait for the link"
        link.publish = real_publish  # type: ignore[method-assign]
        # watch the exchange (in a thread: pika's client blocks), then a reconnect
        connection, channel, queue = await asyncio.to_thread(watch)
        steps.append("watching")
        healthy.clear()
        link._lose("closed by the test")
        await asyncio.wait_for(healthy.wait(), 30)
        steps.append("reconnected")
        got: list[bytes] = []
        for _ in range(100):
            method, _, body = await asyncio.to_thread(channel.basic_get, queue, True)
            if method is not None:
                got.append(body)
                break
            await asyncio.sleep(0.1)
        steps.append("read")
        await asyncio.to_thread(connection.close)
        await asyncio.wait_for(broker.close(), 10)
        return published.offset, got

    offset, got = asyncio.run(asyncio.wait_for(scenario(), 75))
    assert steps[-1] == "read", steps
    assert offset == 1 and len(got) == 1 and b'"offset":1' in got[0], got
