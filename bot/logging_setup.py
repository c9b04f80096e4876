"""Logging: text or JSON lines, with every configured secret masked.

The mask is applied to the final formatted line (message, arguments and
tracebacks alike), so a secret cannot reach the log through an exception's
text either.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable


class RedactingFormatter(logging.Formatter):
    def __init__(self, fmt: str | None, secrets: Iterable[str], as_json: bool) -> None:
        super().__init__(fmt)
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        self._as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        if self._as_json:
            payload = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
            }
            if record.exc_info:
                payload["exception"] = self.formatException(record.exc_info)
            line = json.dumps(payload, ensure_ascii=False)
        else:
            line = super().format(record)
        return self.redact(line)

    def add_secret(self, secret: str) -> None:
        if len(secret) >= 4 and secret not in self._secrets:
            self._secrets = sorted([*self._secrets, secret], key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def setup_logging(level: str, fmt: str, secrets: Iterable[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets, as_json=fmt == "json")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # nio narrates every event at INFO; keep its warnings only.
    for noisy in ("nio", "peewee", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def mask_secret(secret: str) -> None:
    """Mask a secret learnt at run time (the access token a login returns) in every later log line.

    nio puts the access token into request URLs, and an error can carry a URL
    into a log line; configured secrets are masked from the start, this one
    only once it exists.
    """
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, RedactingFormatter):
            handler.formatter.add_secret(secret)
