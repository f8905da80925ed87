"""The chaos harness's own parts: log ordering, reconciliation, rights ranges, the proxy cut."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from typing import Any

from tests.chaos.client import ChaosClient, Identity
from tests.chaos.proxy import CuttableProxy
from tests.chaos.publisher import PublishLog, reconcile
from tests.chaos.run import _store_order
from tests.guarantee.checker import check


def rec(channel: str, epoch: str, offset: int, n: int = 0) -> dict[str, Any]:
    return {
        "channel": channel,
        "epoch": epoch,
        "offset": offset,
        "type": "t",
        "data": {"n": n or offset},
        "state": False,
    }


def test_store_order_sorts_offsets_within_an_epoch_and_keeps_epochs_in_turn() -> None:
    """Replies that arrived out of order are put back in the store's order."""
    rng = random.Random(5)
    first = [rec("contest:x", "e1", o) for o in range(1, 30)]
    second = [rec("contest:x", "e2", o) for o in range(1, 10)]
    arrived = first[:5] + sorted(first[5:], key=lambda _: rng.random()) + second
    arrived[-3], arrived[-1] = arrived[-1], arrived[-3]
    ordered = _store_order(arrived)
    assert ordered == first + second
    seen = [{"kind": "subscribed", "channel": "contest:x", "epoch": "e2", "offset": 9,
             "recovered": None, "missed": [], "state": None}]  # fmt: skip
    assert check(ordered, {"c": seen}, settled=True) == []
    # the arrival order would read as a store rollback: the last offset is not 9 any more
    assert check(arrived, {"c": seen}, settled=True) != []


def test_reconcile_adds_a_stored_event_whose_reply_was_lost() -> None:
    """An event in the store's history with a failed attempt's `n` joins the log once."""
    log = PublishLog()
    log.published = [rec("contest:x", "e1", 1, n=11)]
    log.attempts = {11: {"state": False}, 12: {"state": True}}
    history = [
        {"offset": 1, "type": "t", "data": {"n": 11}},
        {"offset": 2, "type": "t", "data": {"n": 12}},
        {"offset": 3, "type": "t", "data": {"n": 99}},  # not ours: left out
    ]
    assert reconcile(log, "contest:x", "e1", history) == 1
    assert log.published[-1] == {**rec("contest:x", "e1", 2, n=12), "state": True}
    assert reconcile(log, "contest:x", "e1", history) == 0


def test_rights_follow_the_authed_replies() -> None:
    """A private channel is readable from its user's `authed` reply to the next identity."""
    alice = Identity("a", "t1", ("user:a",))
    bob = Identity("b", "t2", ("user:b",))
    client = ChaosClient("c", list, random.Random(1), [alice, bob], [], [], [])
    client.history = [
        {"kind": "connect"},  # 0: anonymous
        {"kind": "authed", "user": "a"},  # 1
        {"kind": "event"},  # 2
        {"kind": "authed", "user": "b"},  # 3
        {"kind": "disconnect", "code": None},  # 4
        {"kind": "connect"},  # 5
        {"kind": "authed", "user": "b"},  # 6
    ]
    assert client.rights() == {"user:a": [[1, 2]], "user:b": [[3, 4], [6, None]]}


def test_proxy_forwards_and_cut_aborts_live_connections() -> None:
    """Bytes go through the proxy; cut() resets the connection on both sides."""
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen()
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = upstream.accept()
        with conn:
            conn.sendall(conn.recv(100))
            try:
                got.append(conn.recv(100))  # b"" once the proxy cuts...
            except ConnectionResetError:
                got.append(b"reset")  # ...or a reset

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    proxy = CuttableProxy("127.0.0.1", upstream.getsockname()[1])
    proxy.start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
            client.sendall(b"ping")
            assert client.recv(100) == b"ping"
            assert proxy.cut() == 1
            with contextlib.suppress(ConnectionResetError):
                assert client.recv(100) == b""
        thread.join(5)
        assert got in ([b""], [b"reset"])
    finally:
        proxy.stop()
        upstream.close()
