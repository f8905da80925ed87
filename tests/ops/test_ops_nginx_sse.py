"""``GET /sse`` through the nginx sample (config/nginx.conf): unbuffered, on any node."""

from __future__ import annotations

import uuid

from tests.conftest import ServerProcess
from tests.ops.test_ops_nginx import Nginx, nginx, nodes  # noqa: F401 (fixtures)
from tests.sse_client import SseStream


def test_event_stream_through_nginx_is_unbuffered_and_resumes_anywhere(
    nginx: Nginx,  # noqa: F811
    nodes: list[ServerProcess],  # noqa: F811
) -> None:
    """Each event arrives on its own (a buffering proxy would hold small ones back), and a
    stream resumed with its Last-Event-ID recovers whichever node nginx picks."""
    channel = f"contest:nginx-{uuid.uuid4().hex[:8]}"
    stream = SseStream(nginx.https, [channel], tls=nginx.ssl)
    try:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        stream.until(lambda d: d["op"] == "subscribed")
        for i in range(1, 4):
            nodes[i % 2].publish({"channel": channel, "type": "t", "data": {"i": i}})
            event = stream.until(lambda d: d["op"] == "event", timeout=5)
            assert event.data["offset"] == i
        last_id = stream.last_id
    finally:
        stream.close()
    nodes[0].publish({"channel": channel, "type": "t", "data": {"i": 4}})
    for _ in range(2):  # least_conn may pick either node: both must recover it
        again = SseStream(nginx.https, [channel], tls=nginx.ssl, last_event_id=last_id)
        try:
            reply = again.until(lambda d: d["op"] == "subscribed")
            assert reply.data["recovered"] is True
            assert [e["offset"] for e in reply.data["missed"]] == [4]
        finally:
            again.close()
