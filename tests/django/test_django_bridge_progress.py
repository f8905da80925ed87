"""Judge progress helpers: state never moves backwards, the verdict is final."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
from bridge_helpers import RealtimeOverride, RealtimeServer, WsClient
from django.db import connection

from django_bridge import realtime_token
from django_bridge.progress import (
    submission_compiling,
    submission_queued,
    submission_rejudge,
    submission_running,
    submission_verdict,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _sid() -> int:
    return random.randint(10**8, 10**9)


def _rank(event: dict[str, Any]) -> int:
    data = event["data"]
    fixed = {"queued": 0, "compiling": 1, "done": 10**6}
    return fixed[data["status"]] if data["status"] in fixed else 1 + int(data["test"])


def _client(server: RealtimeServer, sid: int, user: int = 7) -> WsClient:
    token = realtime_token(user, channels=[f"submission:{sid}"], ttl=60)
    return WsClient(server.ws_url, token=token)


def test_stale_and_duplicate_updates_are_ignored(realtime_settings: RealtimeOverride) -> None:
    """An update older than the current state, or after the verdict, is not applied."""
    sid = _sid()
    applied = [
        submission_running(sid, 3, 5),
        submission_running(sid, 2, 5),
        submission_running(sid, 3, 5),
        submission_verdict(sid, 7, "WA", [{"test": 3, "verdict": "WA"}]),
        submission_running(sid, 5, 5),
        submission_verdict(sid, 7, "AC"),
        submission_queued(sid),
    ]
    assert applied == [True, False, False, True, False, False, False]


def test_shuffled_updates_from_workers_never_go_backwards(
    realtime_settings: RealtimeOverride, bridge_server: RealtimeServer
) -> None:
    """Shuffled, duplicated updates from 3 threads reach a subscriber in rank order only."""
    sid = _sid()
    total = 6
    updates: list[Callable[[], bool]] = [lambda: submission_queued(sid)]
    updates.append(lambda: submission_compiling(sid))
    updates += [lambda k=k: submission_running(sid, k, total) for k in range(1, total + 1)]
    updates.append(lambda: submission_verdict(sid, 7, "AC", [{"test": 1, "verdict": "AC"}]))
    work = updates * 2
    random.Random(sid).shuffle(work)
    ws = _client(bridge_server, sid)
    ws.subscribe(f"submission:{sid}")
    chunks = [work[i::3] for i in range(3)]

    def worker(items: list[Callable[[], bool]]) -> None:
        try:
            for update in items:
                update()
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    received = [ws.next(lambda m: m["op"] == "event")]
    while received[-1]["type"] != "judge.verdict":
        received.append(ws.next(lambda m: m["op"] == "event"))
    with pytest.raises(TimeoutError):
        ws.next(lambda m: m["op"] == "event", timeout=0.3)
    ws.close()
    ranks = [_rank(e) for e in received]
    assert ranks == sorted(set(ranks))
    late = _client(bridge_server, sid)
    try:
        state = late.subscribe(f"submission:{sid}")["state"]
    finally:
        late.close()
    assert state["type"] == "judge.verdict" and state["data"]["verdict"] == "AC"


def test_verdict_notifies_user_channel(
    realtime_settings: RealtimeOverride, bridge_server: RealtimeServer
) -> None:
    """The final verdict is also announced on user:<id>."""
    sid = _sid()
    ws = _client(bridge_server, sid, user=4242)
    try:
        ws.subscribe("user:4242")
        submission_verdict(sid, 4242, "TLE", [{"test": 1, "verdict": "TLE"}])
        [event] = ws.events("user:4242", 1)
    finally:
        ws.close()
    assert event["type"] == "submission.judged"
    assert event["data"] == {"submission": sid, "verdict": "TLE", "score": None}


def _until_verdict(ws: WsClient) -> list[dict[str, Any]]:
    received = [ws.next(lambda m: m["op"] == "event")]
    while received[-1]["type"] != "judge.verdict":
        received.append(ws.next(lambda m: m["op"] == "event"))
    return received


def test_rejudge_shows_the_new_verdict_live(
    realtime_settings: RealtimeOverride, bridge_server: RealtimeServer
) -> None:
    """After a verdict, a rejudge's queued, compiling, tests and new verdict all arrive live."""
    sid = _sid()
    ws = _client(bridge_server, sid)
    try:
        ws.subscribe(f"submission:{sid}")
        assert submission_queued(sid) and submission_compiling(sid)
        assert submission_running(sid, 1, 2) and submission_running(sid, 2, 2)
        assert submission_verdict(sid, 7, "WA", [{"test": 2, "verdict": "WA"}])
        first = _until_verdict(ws)
        attempt = submission_rejudge(sid)
        assert attempt == 2
        assert submission_compiling(sid, attempt=attempt)
        assert submission_running(sid, 1, 2, attempt=attempt)
        assert not submission_running(sid, 2, 2, attempt=1)  # a worker of the old attempt
        assert submission_running(sid, 2, 2, attempt=attempt)
        assert submission_verdict(sid, 7, "AC", attempt=attempt)
        second = _until_verdict(ws)
    finally:
        ws.close()
    assert [e["data"]["status"] for e in first] == [
        "queued",
        "compiling",
        "running",
        "running",
        "done",
    ]
    assert {e["data"]["attempt"] for e in first} == {1}
    assert [e["data"]["status"] for e in second] == [
        "queued",
        "compiling",
        "running",
        "running",
        "done",
    ]
    assert {e["data"]["attempt"] for e in second} == {2}
    assert second[-1]["data"]["verdict"] == "AC"
    assert [e["offset"] for e in first + second] == list(range(1, 11))


def test_fresh_database_reusing_submission_ids_is_published(
    realtime_settings: RealtimeOverride, bridge_server: RealtimeServer
) -> None:
    """Progress rows lost (a new database, same submission ids): the steps still go out."""
    from django_bridge.models import ChannelProgress

    sid = _sid()
    assert submission_queued(sid) and submission_compiling(sid)
    assert submission_verdict(sid, None, "CE")
    ChannelProgress.objects.all().delete()
    ws = _client(bridge_server, sid)
    try:
        ws.subscribe(f"submission:{sid}")
        assert submission_queued(sid) and submission_compiling(sid)
        assert submission_verdict(sid, None, "AC")
        received = _until_verdict(ws)
    finally:
        ws.close()
    assert [e["type"] for e in received] == ["judge.queued", "judge.compiling", "judge.verdict"]
    assert received[-1]["data"]["verdict"] == "AC"


def test_update_discarded_as_duplicate_is_not_reported_published(
    realtime_settings: RealtimeOverride,
) -> None:
    """A step the store already has (the database lost its mark) returns False, not True."""
    from django_bridge.models import ChannelProgress

    sid = _sid()
    assert submission_queued(sid) and submission_compiling(sid)
    # the database comes back from a backup taken before "compiling" was recorded
    ChannelProgress.objects.filter(channel=f"submission:{sid}").update(rank=1)
    assert submission_compiling(sid) is False
    assert submission_running(sid, 1, 1) is True


def test_duplicate_over_http_is_not_reported_published(
    realtime_settings: RealtimeOverride, bridge_server: RealtimeServer
) -> None:
    """Over the http transport too, a step the server already has returns False."""
    from django_bridge.models import ChannelProgress

    realtime_settings["BROKER_URL"] = bridge_server.http_url
    sid = _sid()
    assert submission_queued(sid) and submission_compiling(sid)
    ChannelProgress.objects.filter(channel=f"submission:{sid}").update(rank=1)
    assert submission_compiling(sid) is False
