"""Private Redis deployments on loopback ports, started from the machine's ``redis-server``.

``RedisCluster3x2``: 3 primaries + 3 replicas (cluster bus ports chosen explicitly);
``SentinelSetup``: 1 primary, 1 replica and 3 sentinels. Every process is a child of the
test run, stopped by its PID (never by name), also when a test fails.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from tests.conftest import free_port


def _call(client: redis.Redis, *args: str) -> Any:
    """A raw command (redis-py leaves ``execute_command`` untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _binary() -> str:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    return binary


class RedisProc:
    """One ``redis-server`` (or sentinel) child process."""

    def __init__(self, port: int, workdir: Path, extra: list[str], conf: Path | None = None):
        self.port = port
        self.workdir = workdir
        self.extra = extra
        self.conf = conf
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [_binary()]
        if self.conf is not None:
            args += [str(self.conf), "--sentinel"]
        args += [
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "no",
            "--dir",
            str(self.workdir),
            *self.extra,
        ]
        log = (self.workdir / f"redis-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.wait_ping()

    def wait_ping(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise TimeoutError(f"redis on {self.port} did not start")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=1)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL by PID (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def pause(self) -> None:
        """SIGSTOP by PID: the process holds its connections but answers nothing."""
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT by PID."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class RedisCluster3x2:
    """A 3-primary, 3-replica Redis Cluster with a 1 s node timeout."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[RedisProc] = []
        for _ in range(6):
            port = free_port()
            node_dir = workdir / str(port)
            node_dir.mkdir(parents=True)
            self.procs.append(
                RedisProc(
                    port,
                    node_dir,
                    [
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-port", str(free_port()),
                        "--cluster-node-timeout", "1000",
                        "--cluster-replica-validity-factor", "0",
                        "--save", "",
                        "--appendonly", "no",
                        "--repl-diskless-sync-delay", "0",
                    ],
                )
            )  # fmt: skip

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{p.port}" for p in self.procs[:3])
        return f"redis+cluster://{seeds}"

    def start(self) -> None:
        for proc in self.procs:
            proc.start()
        hosts = [f"127.0.0.1:{p.port}" for p in self.procs]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *hosts, "--cluster-replicas", "1",
             "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        self.wait_ok()

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()

    def proc(self, port: int) -> RedisProc:
        return next(p for p in self.procs if p.port == port)

    def nodes(self) -> list[dict[str, str]]:
        """CLUSTER NODES as seen by a live node: id, port, role, slots."""
        for proc in self.procs:
            if not proc.alive:
                continue
            try:
                text = _call(proc.client(), "CLUSTER", "NODES")
            except redis.RedisError:
                continue
            raw = text.decode() if isinstance(text, bytes) else str(text)
            out = []
            for line in raw.strip().splitlines():
                parts = line.split()
                out.append(
                    {
                        "id": parts[0],
                        "port": parts[1].split("@")[0].rsplit(":", 1)[1],
                        "flags": parts[2],
                        "master": parts[3],
                        "slots": " ".join(parts[8:]),
                    }
                )
            return out
        raise AssertionError("no cluster node answers")

    def primaries(self) -> dict[int, str]:
        """Port -> node id of every live primary that owns slots."""
        return {
            int(n["port"]): n["id"]
            for n in self.nodes()
            if "master" in n["flags"] and "fail" not in n["flags"] and n["slots"]
        }

    def owner_port(self, slot: int) -> int:
        """The port of the live primary that owns ``slot``."""
        for node in self.nodes():
            if "master" not in node["flags"] or "fail" in node["flags"]:
                continue
            for token in node["slots"].split():
                if token.startswith("["):
                    continue  # a migrating/importing marker
                lo, _, hi = token.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return int(node["port"])
        raise AssertionError(f"slot {slot} has no live primary")

    def migrate_slot(self, slot: int, source: int, target: int) -> None:
        """Move ``slot`` and its keys from primary ``source`` to primary ``target`` (ports)."""
        ids = self.primaries()
        src, dst = self.proc(source).client(), self.proc(target).client()
        _call(dst, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[source])
        _call(src, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[target])
        while True:
            keys = _call(src, "CLUSTER", "GETKEYSINSLOT", str(slot), "100")
            if not keys:
                break
            _call(src, "MIGRATE", "127.0.0.1", str(target), "", "0", "5000", "KEYS", *keys)
        for port in (target, source, *[p for p in ids if p not in (source, target)]):
            _call(self.proc(port).client(), "CLUSTER", "SETSLOT", str(slot), "NODE", ids[target])

    def _replicas_synced(self) -> bool:
        """Every live replica has a working link to its primary (else it cannot take over)."""
        for proc in self.procs:
            if not proc.alive:
                continue
            try:
                info = proc.client().info("replication")
            except redis.RedisError:
                return False
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def wait_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = []
            for proc in self.procs:
                if proc.alive:
                    try:
                        info = _call(proc.client(), "CLUSTER", "INFO")
                        states.append(b"cluster_state:ok" in info)
                    except redis.RedisError:
                        states.append(False)
            if states and all(states) and len(self.primaries()) == 3 and self._replicas_synced():
                return
            time.sleep(0.1)
        raise TimeoutError("the cluster did not reach cluster_state:ok")


class SentinelSetup:
    """1 primary + 1 replica + 3 sentinels watching service ``rtsvc``."""

    SERVICE = "rtsvc"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        common = ["--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0"]
        self.primary = RedisProc(free_port(), workdir, common)
        self.replica = RedisProc(free_port(), workdir, common)
        self.sentinels: list[RedisProc] = []
        for i in range(3):
            conf = workdir / f"sentinel-{i}.conf"
            self.sentinels.append(RedisProc(free_port(), workdir, [], conf=conf))

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    def start(self) -> None:
        self.primary.start()
        self.replica.extra += ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica.start()
        for sentinel in self.sentinels:
            assert sentinel.conf is not None
            sentinel.conf.write_text(
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                f"sentinel failover-timeout {self.SERVICE} 5000\n"
                f"sentinel parallel-syncs {self.SERVICE} 1\n"
            )
            sentinel.start()
        self.wait_replicated()

    def wait_replicated(self, timeout: float = 20.0) -> None:
        """Wait until the replica has finished its sync (else it cannot take over)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replica = self.replica if self.primary_proc() is self.primary else self.primary
            try:
                info = replica.client().info("replication")
            except redis.RedisError:
                info = {}
            if info.get("role") == "slave" and info.get("master_link_status") == "up":
                return
            time.sleep(0.1)
        raise TimeoutError("the replica did not finish its sync")

    def primary_port(self) -> int:
        """The primary's port as the sentinels see it."""
        for sentinel in self.sentinels:
            if sentinel.alive:
                try:
                    _host, port = _call(
                        sentinel.client(), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE
                    )
                    return int(port)
                except (redis.RedisError, TypeError):
                    continue
        raise AssertionError("no sentinel answers")

    def primary_proc(self) -> RedisProc:
        port = self.primary_port()
        return self.primary if self.primary.port == port else self.replica

    def replica_proc(self) -> RedisProc:
        """The one that is not the primary now."""
        return self.replica if self.primary_proc() is self.primary else self.primary

    def stop(self) -> None:
        for proc in [*self.sentinels, self.primary, self.replica]:
            proc.stop()
