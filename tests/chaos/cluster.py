"""A cluster under test: a private Redis, two real server nodes, and the faults on them.

Two kinds (``transport``):

* ``redis``: both nodes on the Redis broker (pub/sub transport, Redis store).
* ``amqp``: both nodes on the shared RabbitMQ (a unique exchange), each through its own
  ``CuttableProxy``, with the private Redis as the shared store.

A Redis node and an AMQP node cannot share channels (an event published through one transport
never reaches the other), so a run uses one cluster of each kind side by side, each with its
own channels. Everything started here is stopped by PID (or by its proxy) in ``stop()``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from tests.chaos.proxy import CuttableProxy
from tests.conftest import ServerProcess, free_port, server_env
from tests.reliability.conftest import PrivateRedis

NODE_SETTINGS = {
    # small enough that a client that stops reading for a few seconds is cut off (1013)
    "max_send_buffer": "32768",
    "log_level": "WARNING",
    # every client comes from 127.0.0.1: the per-IP churn limit is meant for many addresses
    "ip_channel_churn_rate": "100000",
    "ip_channel_churn_burst": "100000",
}


class Cluster:
    """A private Redis and two server nodes of one transport kind."""

    def __init__(self, name: str, transport: str, workdir: Path, amqp_url: str | None) -> None:
        assert transport in ("redis", "amqp")
        self.name = name
        self.transport = transport
        self.workdir = workdir
        self.redis = PrivateRedis(free_port(), workdir / f"{name}-redis.log")
        self.exchange = f"rt-chaos-{uuid.uuid4().hex[:10]}"
        self.amqp_url = amqp_url
        self.proxies: list[CuttableProxy] = []
        self.nodes: list[ServerProcess] = []

    def start(self) -> None:
        self.redis.start()
        for i in range(2):
            settings = dict(NODE_SETTINGS)
            if self.transport == "redis":
                settings["broker_url"] = self.redis.url
                # a short history here: bursts and outages outrun it, so resyncs happen
                # without a store loss too (the AMQP cluster keeps the default 100)
                settings["history_size"] = "20"
            else:
                assert self.amqp_url is not None
                proxy = CuttableProxy(*_host_port(self.amqp_url))
                proxy.start()
                self.proxies.append(proxy)
                settings["broker_url"] = _with_port(self.amqp_url, proxy.port)
                settings["redis_url"] = self.redis.url
                settings["amqp_exchange"] = self.exchange
            node = ServerProcess(
                port=free_port(),
                env=server_env(**settings),
                log_path=self.workdir / f"{self.name}-node{i}.log",
            )
            self.nodes.append(node)
            node.start(timeout=30)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop(timeout=10)
        for proxy in self.proxies:
            with contextlib.suppress(Exception):
                proxy.stop()
        self.redis.stop()
        if self.transport == "amqp" and self.amqp_url:
            with contextlib.suppress(Exception):
                import pika

                conn = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
                try:
                    conn.channel().exchange_delete(self.exchange)
                finally:
                    conn.close()

    # --- state -------------------------------------------------------------------------

    def up(self, i: int) -> bool:
        proc = self.nodes[i].proc
        return proc is not None and proc.poll() is None

    def live_urls(self) -> list[str]:
        """WebSocket URLs of the nodes that run (all of them when none does)."""
        urls = [n.ws_url for i, n in enumerate(self.nodes) if self.up(i)]
        return urls or [n.ws_url for n in self.nodes]

    def live_http(self) -> list[str]:
        urls = [n.url for i, n in enumerate(self.nodes) if self.up(i)]
        return urls or [n.url for n in self.nodes]

    def healthy(self) -> bool:
        """Every node answers /healthz with 200 and Redis answers PING."""
        if self.redis.command("PING") != "+PONG":
            return False
        for node in self.nodes:
            try:
                if node.get("/healthz")[0] != 200:
                    return False
            except OSError:
                return False
        return True

    # --- faults (blocking: run them in a thread) -----------------------------------------

    def kill_pubsub(self, rng: Any) -> str:
        """CLIENT KILL one node's pub/sub connection (by its CLIENT SETNAME)."""
        ids = [c["id"] for c in self._clients() if c.get("name", "").startswith("realtime-sub:")]
        if not ids:
            return "no pub/sub connection"
        victim = rng.choice(ids)
        return f"killed pubsub id={victim}: {self.redis.command('CLIENT', 'KILL', 'ID', victim)}"

    def kill_store_connections(self) -> str:
        """CLIENT KILL every normal (store) connection: the pools reconnect on next use."""
        return f"killed store connections: {self.redis.command('CLIENT', 'KILL', 'TYPE', 'normal')}"

    def restart_redis(self, down_for: float) -> str:
        """Stop Redis by PID and start it again on the same port: every key is lost."""
        self.redis.stop()
        time.sleep(down_for)
        self.redis.start()
        return f"redis restarted after {down_for:.1f}s"

    def cut_amqp(self, i: int) -> str:
        """Abort node ``i``'s AMQP connection at the proxy."""
        return f"cut {self.proxies[i].cut()} amqp connection(s) of node {i}"

    def kill_node(self, i: int) -> str:
        """SIGKILL node ``i`` (a crash)."""
        self.nodes[i].kill()
        return f"node {i} killed"

    def start_node(self, i: int) -> str:
        """Start node ``i`` again on its port; wait until it answers HTTP."""
        self.nodes[i].start(wait_healthy=False, timeout=30)
        return f"node {i} restarted"

    def _clients(self) -> list[dict[str, str]]:
        """CLIENT LIST of the private Redis, parsed."""
        with socket.create_connection(("127.0.0.1", self.redis.port), timeout=2) as sock:
            sock.sendall(b"CLIENT LIST\r\n")
            data = b""
            while True:
                data += sock.recv(65536)
                head, _, rest = data.partition(b"\r\n")
                if head.startswith(b"$") and len(rest) >= int(head[1:]):
                    break
        lines = rest.decode().splitlines()
        return [dict(f.split("=", 1) for f in line.split(" ") if "=" in f) for line in lines]

    # --- the store, read at the end ----------------------------------------------------

    def stored(self, channel: str) -> tuple[str | None, list[dict[str, Any]]]:
        """Return the channel's current epoch and its history events (oldest first)."""
        import redis

        from realtime.brokers.redis_layout import DEFAULT_PREFIX, channel_keys

        meta, hist, _state = channel_keys(DEFAULT_PREFIX, channel)
        client = redis.Redis(port=self.redis.port, socket_timeout=5)
        try:
            epoch: Any = client.hget(meta, "epoch")
            entries: Any = client.lrange(hist, 0, -1)
        finally:
            client.close()
        events = [json.loads(e.split(b" ", 1)[1]) for e in entries]
        return (epoch.decode() if epoch else None), events


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5672


def _with_port(url: str, port: int) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{port}"))
