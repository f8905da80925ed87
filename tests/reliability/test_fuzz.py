"""Property tests: the command parser and the session never raise and answer only with
contract error codes; random byte streams on a real socket get a contract answer or close
code and the server stays up."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.config import Settings
from realtime.errors import ErrorCode, ProtocolError
from realtime.messages import Command, parse_command
from realtime.protocol import Close, Reply, Session, Subscribe, Unsubscribe
from tests.client import Client
from tests.conftest import TEST_SECRET, ServerProcess, free_port, server_env
from tests.reliability.rawws import CLOSED, RawClient, frame

CONTRACT_CODES = {code.value for code in ErrorCode}
# close codes a server may answer garbage with (RFC 6455 + the contract); CLOSED = TCP only
CONTRACT_CLOSES = {1002, 1003, 1007, 1008, 1009, CLOSED}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
commands = st.fixed_dictionaries(
    {},
    optional={
        "op": st.sampled_from(["auth", "subscribe", "unsubscribe", "ping", "x", ""]) | json_values,
        "id": json_values,
        "channel": st.sampled_from(["contest:1", "user:1", "submission:9", "nope:1", "bad"])
        | json_values,
        "token": json_values,
        "since": st.fixed_dictionaries(
            {}, optional={"epoch": json_values, "offset": st.integers() | json_values}
        )
        | json_values,
    },
)
texts = (
    st.text(max_size=200)
    | st.binary(max_size=200)
    | commands.map(lambda c: json.dumps(c, allow_nan=True))
)


@settings(max_examples=400, deadline=None)
@given(texts)
def test_parse_command_never_raises_anything_but_contract_errors(text: str | bytes) -> None:
    """parse_command returns a Command or raises ProtocolError with a contract code."""
    try:
        command = parse_command(text)
    except ProtocolError as exc:
        assert exc.code.value in CONTRACT_CODES
    else:
        assert isinstance(command, Command)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(texts, min_size=1, max_size=30))
def test_session_receive_never_raises(frames: list[str | bytes]) -> None:
    """Session.receive answers any frame sequence with actions; errors carry contract codes."""
    session = Session(Settings(secret=TEST_SECRET))
    for text in frames:
        for action in session.receive(text):
            assert isinstance(action, Reply | Subscribe | Unsubscribe | Close)
            if isinstance(action, Reply):
                reply = orjson.loads(action.data)
                if reply["op"] == "error":
                    assert reply["code"] in CONTRACT_CODES


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for every example (hypothesis reruns the test body, not the fixture)."""
    server = ServerProcess(
        port=free_port(),
        env=server_env(),
        log_path=tmp_path_factory.mktemp("fuzz") / "server.log",
    )
    server.start()
    yield server
    server.stop()


def _close_code_sent(opcode: int, payload: bytes) -> int | None:
    """The code a client close frame carries (1005: none); None for other frames."""
    if opcode != 0x8:
        return None
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005


def _raw_frames() -> Any:
    """Lists of (bytes to send, close code the client sent in them or None)."""
    payload = st.binary(max_size=300)
    return st.lists(
        st.one_of(
            st.builds(
                lambda op, p, fin, rsv: (frame(op, p, fin, rsv), _close_code_sent(op, p)),
                st.sampled_from([0, 1, 2, 3, 8, 9, 10, 11, 15]),
                payload,
                st.booleans(),
                st.integers(0, 7),
            ),
            st.builds(lambda p: (frame(1, p), None), payload),
            # bytes that are not a frame at all (e.g. unmasked or truncated)
            st.builds(lambda p: (p, None), payload),
        ),
        min_size=1,
        max_size=6,
    )


def _answer(raw: RawClient) -> tuple[list[bytes], int | None]:
    """Read until close or quiet; return texts and the close code (None: still open)."""
    texts: list[bytes] = []
    raw.sock.settimeout(0.3)
    while True:
        try:
            got = raw.read_frame()
        except TimeoutError:
            return texts, None
        if got is None:
            return texts, CLOSED
        if got[0] == 0x8:
            return texts, struct.unpack("!H", got[1][:2])[0] if len(got[1]) >= 2 else 1005
        if got[0] == 0x1:
            texts.append(got[1])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_raw_frames())
def test_random_bytes_on_a_socket_get_a_contract_answer(
    fuzz_server: ServerProcess, chunks: list[tuple[bytes, int | None]]
) -> None:
    """Random frames and bytes: error replies or a contract close code; the server stays up."""
    raw = RawClient(fuzz_server.port)
    raw.next_text()  # welcome
    try:
        for chunk, _ in chunks:
            raw.send(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server already closed: read what it said
    texts, code = _answer(raw)
    raw.close()
    for text in texts:
        for line in text.split(b"\n"):
            msg = orjson.loads(line)
            if msg["op"] == "error":
                assert msg["code"] in CONTRACT_CODES
    # a close the client started is echoed with the client's code (RFC 6455 5.5.1)
    echoed = {sent for _, sent in chunks if sent is not None}
    assert code is None or code in CONTRACT_CLOSES | echoed, code
    with socket.create_connection(("127.0.0.1", fuzz_server.port), timeout=2):
        pass
    assert fuzz_server.proc is not None and fuzz_server.proc.poll() is None


def test_server_still_serves_after_fuzzing(fuzz_server: ServerProcess) -> None:
    """After the byte fuzzer, a normal client still gets pong and /healthz is 200."""

    async def run() -> dict[str, Any]:
        async with await Client.open(fuzz_server.ws_url) as client:
            return await client.request({"op": "ping"})

    assert asyncio.run(run())["op"] == "pong"
    assert fuzz_server.get("/healthz")[0] == 200
    assert "Traceback" not in fuzz_server.log()
