"""Contest API times: RELTIME strings (``-h:mm:ss.uuu``), TIME strings, integer minutes."""

from __future__ import annotations

import re
from datetime import datetime

_RELTIME = re.compile(r"(-?)(\d+):([0-5]\d):([0-5]\d)(?:\.(\d{1,3}))?")


def parse_reltime(text: str) -> int:
    """Return a RELTIME such as ``"1:22:48.427"`` or ``"-0:00:05"`` in milliseconds.

    Raises:
        ValueError: not a RELTIME.
    """
    match = _RELTIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a RELTIME: {text!r}")
    sign, hours, minutes, seconds, frac = match.groups()
    ms = ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1000
    ms += int((frac or "0").ljust(3, "0"))
    return -ms if sign else ms


def format_reltime(ms: int) -> str:
    """Return milliseconds as a RELTIME (``h:mm:ss.uuu``, with ``-`` when negative)."""
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    seconds, millis = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{sign}{hours}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def duration_minutes(value: object, default: int = 20) -> int:
    """Return a duration given as integer minutes (2023-06 and older) or a RELTIME (newer).

    ``penalty_time`` is an integer up to 2023-06 and a RELTIME afterwards; both are accepted.
    """
    if value is None:
        return default
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        return parse_reltime(value) // 60_000
    raise ValueError(f"not a duration: {value!r}")


def duration_ms(value: object) -> int | None:
    """Return a RELTIME (or integer minutes) in milliseconds; None for null/absent."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value * 60_000)
    if isinstance(value, str):
        return parse_reltime(value)
    raise ValueError(f"not a duration: {value!r}")


def parse_time(text: str) -> datetime:
    """Return a TIME (``2014-06-25T11:22:48.427+01``) as an aware datetime.

    Raises:
        ValueError: not an ISO 8601 time with an offset.
    """
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    elif re.search(r"[+-]\d\d$", value):
        value += ":00"  # the spec allows "+01"; fromisoformat wants "+01:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"TIME without an offset: {text!r}")
    return parsed


def format_time(when: datetime) -> str:
    """Return an aware datetime as a TIME with milliseconds."""
    text = when.isoformat(timespec="milliseconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text
