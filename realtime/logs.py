"""Logging setup: plain or JSON lines, level from the config; never tokens or secrets.

The code does not log tokens or secrets; ``RedactFilter`` is the belt to those braces.
It sits on the handler, so it sees every record of every logger (tornado's and the
libraries' too), and masks anything shaped like a JWT, ``token=``/``key=`` query values,
``Bearer`` credentials, passwords in URLs, and the configured secret and API key.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable

import orjson

MASK = "[redacted]"
MIN_SECRET = 6  # shorter "secrets" would mask ordinary words (dev settings)
_PATTERNS = [
    # a JWT: three base64url parts, the first one a JSON header ("eyJ" = '{"')
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), MASK),
    (
        re.compile(r"(?i)\b((?:access_)?token|api_?key|secret|password)=[^&\s\"']+"),
        rf"\1={MASK}",
    ),
    (re.compile(r"(?i)\b(bearer)\s+[^\s\"',]+"), rf"\1 {MASK}"),
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@"), rf"\1{MASK}@"),
]


class RedactFilter(logging.Filter):
    """Mask tokens and secrets in the message and traceback of every record."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.secrets = sorted(
            {s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True
        )

    def redact(self, text: str) -> str:
        """Return ``text`` with every token-like or secret part masked."""
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, pid (+ exc)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        return orjson.dumps(entry).decode()


def setup_logging(level: str, json_lines: bool, secrets: Iterable[str | None] = ()) -> None:
    """Configure the root logger once for the process.

    Args:
        level: DEBUG, INFO, WARNING or ERROR.
        json_lines: one JSON object per line instead of plain text.
        secrets: values never to print (the HS256 secret, the API key).
    """
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s")
        )
    handler.addFilter(RedactFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # tornado's access log duplicates ours; its warnings still come through
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
