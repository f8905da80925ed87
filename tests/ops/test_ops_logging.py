"""Logs: JSON lines, lifecycle events, never a token or a secret."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from realtime.logs import MASK, JsonFormatter, RedactFilter
from tests.client import Client
from tests.conftest import make_token
from tests.ops.conftest import wait_for

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMDAxIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("realtime.test", logging.INFO, __file__, 1, msg, args, None)


def test_redact_masks_jwts_query_tokens_and_configured_secrets() -> None:
    """A JWT, a token= value and the configured secret never reach the output."""
    rec = record("GET /ws?token=%s key=%s via secret %s", "abc.def", "k-123456", "s3cr3t-value")
    RedactFilter(["s3cr3t-value", None, ""]).filter(rec)
    rec2 = record("auth with %s failed", JWT)
    RedactFilter().filter(rec2)
    assert rec.getMessage() == f"GET /ws?token={MASK} key=k-123456 via secret {MASK}"
    assert rec2.getMessage() == f"auth with {MASK} failed"


def test_redact_masks_url_passwords_and_bearer_credentials() -> None:
    """Broker URLs keep their host but lose their password; Bearer keys are masked."""
    rec = record("connecting amqp://guest:hunter2@10.0.0.5:5672/ with Bearer abc.123")
    RedactFilter().filter(rec)
    assert rec.getMessage() == f"connecting amqp://guest:{MASK}@10.0.0.5:5672/ with Bearer {MASK}"


def test_redact_masks_tracebacks() -> None:
    """A token inside an exception's text is masked in the logged traceback too."""
    try:
        raise ValueError(f"bad token {JWT}")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    RedactFilter().filter(rec)
    line = JsonFormatter().format(rec)
    assert JWT not in line and MASK in json.loads(line)["exc"]


def test_server_logs_json_lifecycle_lines_without_tokens(server_factory: Any) -> None:
    """--log-json at DEBUG: every line is JSON, connections open and close, no token leaks."""
    server = server_factory(log_json="true", log_level="DEBUG")
    token = make_token("1001")

    async def scenario() -> str:
        async with await Client.open(f"{server.ws_url}?token={token}") as c:
            assert (await c.auth(token))["op"] == "authed"
            assert (await c.subscribe("user:2002"))["code"] == "forbidden"
            return str(c.welcome["session"])

    session = asyncio.run(scenario())
    wait_for(lambda: f"{session} closed" in server.log(), what="the close line")
    server.stop()
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "msg", "pid"} <= set(entry) for entry in lines)
    messages = [entry["msg"] for entry in lines]
    assert any(f"{session} opened" in m for m in messages)
    assert any("denied" in m and "user:2002" in m for m in messages)  # the audit line
    assert token not in server.log()
