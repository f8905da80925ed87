"""Client frame parsing (RFC 6455 section 5): messages out, violations as FrameError codes."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.frames import (
    FrameError,
    FrameParser,
    close_frame,
    control_frame,
    parse_close,
    text_frame,
    unmask,
)


def client_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    """A masked client frame, as a browser sends it."""
    mask = os.urandom(4)
    size = len(payload)
    head = bytes(((0x80 if fin else 0) | rsv | opcode,))
    if size < 126:
        head += bytes((0x80 | size,))
    elif size < 65536:
        head += bytes((0x80 | 126,)) + struct.pack("!H", size)
    else:
        head += bytes((0x80 | 127,)) + struct.pack("!Q", size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_unmask_matches_the_bytewise_definition() -> None:
    mask, data = b"\x01\x02\x03\x04", bytes(range(11))
    assert unmask(mask, data) == bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    assert unmask(mask, b"") == b""


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 70000])
def test_one_frame_per_message_at_every_length_encoding(size: int) -> None:
    payload = os.urandom(size)
    parser = FrameParser(1 << 20)
    assert parser.feed(client_frame(0x2, payload)) == [(0x2, payload)]


@given(
    messages=st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=50), max_size=40),
)
def test_any_split_of_the_byte_stream_gives_the_same_messages(
    messages: list[bytes], cuts: list[int]
) -> None:
    """TCP may deliver the frames in any chunks; fragmented and control frames included."""
    stream = b""
    expected: list[tuple[int, bytes]] = []
    for i, payload in enumerate(messages):
        if i % 3 == 2 and len(payload) >= 2:  # fragmented, with a ping in between
            half = len(payload) // 2
            stream += client_frame(0x1, payload[:half], fin=False)
            stream += client_frame(0x9, b"hi")
            stream += client_frame(0x0, payload[half:])
            expected += [(0x9, b"hi"), (0x1, payload)]
        else:
            stream += client_frame(0x2, payload)
            expected.append((0x2, payload))
    parser = FrameParser(1 << 20)
    got: list[tuple[int, bytes]] = []
    pos = 0
    for cut in cuts:
        got += parser.feed(stream[pos : pos + cut])
        pos += cut
    got += parser.feed(stream[pos:])
    assert got == expected


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (bytes((0x81, 0x02)) + b"hi", 1002),  # unmasked
        (client_frame(0x1, b"x", rsv=0x40), 1002),  # RSV1 without a negotiated extension
        (client_frame(0x3, b"x"), 1002),  # reserved data opcode
        (client_frame(0xB, b"x"), 1002),  # reserved control opcode
        (client_frame(0x9, b"x", fin=False), 1002),  # fragmented control frame
        (client_frame(0x9, b"x" * 126), 1002),  # control payload over 125
        (client_frame(0x0, b"x"), 1002),  # continuation with nothing to continue
        (client_frame(0x1, b"a", fin=False) + client_frame(0x1, b"b"), 1002),  # no continuation
        (client_frame(0x1, b"x" * 1025), 1009),  # over the limit in one frame
        (client_frame(0x1, b"x" * 600, fin=False) + client_frame(0x0, b"x" * 600), 1009),
    ],
)
def test_violations_raise_with_the_close_code(frames: bytes, code: int) -> None:
    parser = FrameParser(1024)
    with pytest.raises(FrameError) as info:
        parser.feed(frames)
    assert info.value.code == code


def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    """The declared length decides: a peer can't make us buffer 1 GB first."""
    head = bytes((0x82, 0x80 | 127)) + struct.pack("!Q", 1 << 30)
    with pytest.raises(FrameError) as info:
        FrameParser(65536).feed(head)
    assert info.value.code == 1009


def test_close_payloads() -> None:
    assert parse_close(b"") == (None, "")
    assert parse_close(struct.pack("!H", 1000) + b"bye") == (1000, "bye")
    assert parse_close(struct.pack("!H", 4001)) == (4001, "")
    for bad, code in [
        (b"\x03", 1002),
        (struct.pack("!H", 1005), 1002),
        (struct.pack("!H", 999), 1002),
        (struct.pack("!H", 2000), 1002),
        (struct.pack("!H", 1000) + b"\xff", 1007),
    ]:
        with pytest.raises(FrameError) as info:
            parse_close(bad)
        assert info.value.code == code


def test_server_frames() -> None:
    assert control_frame(0x9) == b"\x89\x00"
    assert close_frame(1012, "server restarting") == b"\x88\x13\x03\xf4server restarting"
    assert len(close_frame(1000, "é" * 100)) <= 127  # reason cut to fit, still UTF-8
    parse_close(close_frame(1000, "é" * 100)[2:])
    assert text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    with pytest.raises(ValueError):
        control_frame(0x9, b"x" * 126)
