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
