"""A bot message: plain body + HTML, kept well under Matrix's event size limit.

A Matrix event is at most 65,536 bytes. The text we send grows on the way:
nio escapes non-ASCII to ``\\uXXXX``, an edit carries the text twice
(fallback body and ``m.new_content``), and in an encrypted room the whole
JSON is base64'd (x4/3). Capping each text field at 8 KB of escaped JSON keeps
the worst case (HTML + plain, twice, encrypted) near 45 KB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_FIELD_BYTES = 8_000
MATRIX_EVENT_LIMIT = 65_536


def escaped_size(text: str) -> int:
    """Bytes the text takes inside the JSON nio sends (ASCII-escaped)."""
    return len(json.dumps(text))


@dataclass(frozen=True)
class Message:
    plain: str
    html: str | None = None

    def content(self, msgtype: str = "m.notice") -> dict[str, Any]:
        """The ``m.room.message`` content; bot output is ``m.notice`` so other bots ignore it."""
        body: dict[str, Any] = {"msgtype": msgtype, "body": _clip(self.plain)}
        if self.html is not None:
            body["format"] = "org.matrix.custom.html"
            body["formatted_body"] = _clip(self.html)
        return body


def mentioning_content(message: Message, *, room: bool) -> dict[str, Any]:
    """The message's content with intentional mentions: only the room, and only when asked.

    An empty ``m.mentions`` also keeps clients from pinging on words in the
    text (an alert's or an event's, which the bot does not control).
    """
    content = message.content()
    content["m.mentions"] = {"room": True} if room else {}
    return content


def fit_lines(lines: list[str], budget: int = MAX_FIELD_BYTES, more: str = "… and {n} more") -> list[str]:
    """Keep leading lines within ``budget`` escaped bytes; say how many were left out."""
    kept: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        size = escaped_size(line) + 2
        reserve = escaped_size(more.format(n=len(lines))) + 2
        if used + size + (reserve if index < len(lines) - 1 else 0) > budget:
            kept.append(more.format(n=len(lines) - index))
            return kept
        kept.append(line)
        used += size
    return kept


def clip(text: str, max_bytes: int, marker: str = "…") -> str:
    """``text`` cut (ending in ``marker``) to at most ``max_bytes`` escaped bytes."""
    if escaped_size(text) <= max_bytes:
        return text
    low, high = 0, len(text)
    # Binary search the longest prefix that fits: escaping makes size non-linear.
    while low < high:
        mid = (low + high + 1) // 2
        if escaped_size(text[:mid] + marker) <= max_bytes:
            low = mid
        else:
            high = mid - 1
    return text[:low] + marker


def _clip(text: str) -> str:
    """Last-resort cut for one oversized field; callers should use fit_lines first."""
    return clip(text, MAX_FIELD_BYTES, "\n… (truncated)")
