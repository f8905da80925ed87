"""WebSocket frame encoding for the fan-out fast path (RFC 6455 section 5.2).

A server frame is never masked, so one event's frame is the same bytes for every
subscriber: it is built once and written to each socket as it is.
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81


def text_frame(payload: bytes) -> bytes:
    """Return an unmasked, unfragmented text frame carrying ``payload``."""
    length = len(payload)
    if length < 126:
        return bytes((_FIN_TEXT, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", _FIN_TEXT, 126, length) + payload
    return struct.pack("!BBQ", _FIN_TEXT, 127, length) + payload


# -- client frames ---------------------------------------------------------------------

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_DATA_OPCODES = frozenset((OP_CONTINUATION, OP_TEXT, OP_BINARY))
_CONTROL_OPCODES = frozenset((OP_CLOSE, OP_PING, OP_PONG))


class FrameError(Exception):
    """The peer broke RFC 6455; close the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """Return an unmasked control frame (payload at most 125 bytes)."""
    if len(payload) > 125:
        raise ValueError("control frame payload over 125 bytes")
    return bytes((0x80 | opcode, len(payload))) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """Return a close frame carrying ``code`` and ``reason`` (cut to fit 125 bytes)."""
    raw = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    return control_frame(OP_CLOSE, struct.pack("!H", code) + raw)


def unmask(mask: bytes, data: bytes) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``mask`` (one big-integer XOR, no loop)."""
    size = len(data)
    if not size:
        return b""
    key = (mask * ((size + 3) // 4))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


class FrameParser:
    """Sans-I/O reader of client frames: bytes in, whole messages and control frames out.

    Enforces what a server must (RFC 6455 section 5): frames masked, no reserved bits (no
    extension is negotiated), known opcodes, control frames unfragmented and at most 125
    bytes, continuation frames only inside a fragmented message, and a message size
    limit checked against the declared length before its payload is buffered.
    """

    __slots__ = ("_buffer", "_max_size", "_opcode", "_parts", "_size")

    def __init__(self, max_message_size: int) -> None:
        self._buffer = b""
        self._max_size = max_message_size
        self._opcode = -1  # opcode of the fragmented message in progress, -1: none
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Parse ``data``; return ``(opcode, payload)`` of each complete message/control frame.

        Raises ``FrameError`` on a protocol violation (the connection must then close).
        """
        buf = self._buffer + data if self._buffer else data
        out: list[tuple[int, bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            opcode, length = b0 & 0x0F, b1 & 0x7F
            if b0 & 0x70:
                raise FrameError(1002, "reserved bits set")
            if not b1 & 0x80:
                raise FrameError(1002, "client frames must be masked")
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if opcode in _CONTROL_OPCODES:
                if not b0 & 0x80 or length > 125:
                    raise FrameError(1002, "fragmented or oversized control frame")
            elif opcode in _DATA_OPCODES:
                if self._size + length > self._max_size:
                    raise FrameError(1009, "message too big")
            else:
                raise FrameError(1002, "unknown opcode")
            total = head + 4 + length
            if end - pos < total:
                break
            payload = unmask(buf[pos + head : pos + head + 4], buf[pos + head + 4 : pos + total])
            pos += total
            if opcode >= OP_CLOSE:
                out.append((opcode, payload))
                continue
            if opcode == OP_CONTINUATION:
                if self._opcode < 0:
                    raise FrameError(1002, "continuation without a message")
            elif self._opcode >= 0:
                raise FrameError(1002, "new message inside a fragmented one")
            elif b0 & 0x80:
                out.append((opcode, payload))  # the common case: one frame, one message
                continue
            else:
                self._opcode = opcode
            self._parts.append(payload)
            self._size += length
            if b0 & 0x80:
                out.append((self._opcode, b"".join(self._parts)))
                self._opcode, self._parts, self._size = -1, [], 0
        self._buffer = buf[pos:] if pos < end else b""
        return out


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """Return the code and reason of a close frame's payload (code None: none given)."""
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise FrameError(1002, "close payload of one byte")
    code = int.from_bytes(payload[:2], "big")
    if not ((1000 <= code <= 1014 and code not in (1004, 1005, 1006)) or 3000 <= code <= 4999):
        raise FrameError(1002, "invalid close code")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(1007, "close reason is not UTF-8") from None
    return code, reason
