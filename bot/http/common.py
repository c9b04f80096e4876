"""What every webhook handler does before its own work: read, decode, validate, answer problems.

A hook answers 4xx for what retrying cannot fix (naming the problem, never
echoing the input) and 503 only when the bot itself cannot keep what it
was sent, so senders that retry (Alertmanager) retry exactly then.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from bot.errors import StoreUnavailableError

__all__ = [
    "MAX_JSON_DEPTH",
    "PayloadError",
    "StoreUnavailableError",
    "decode_json_object",
    "describe_validation_error",
    "problem",
    "read_json_body",
]

# A real payload nests 4 levels (Alertmanager: payload → alerts → alert →
# labels). Anything far deeper is an attack on the parser or on whoever walks
# the data later.
MAX_JSON_DEPTH = 32
# At most this many problems are listed in a 400 answer, each path part cut to
# this many characters: a label name is text the sender controls.
_MAX_PROBLEMS = 10
_MAX_PATH_PART = 64


class PayloadError(Exception):
    """A request that retrying cannot fix: answered 4xx with ``detail`` (and field ``problems``)."""

    def __init__(self, status: int, detail: str, problems: list[str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.problems = problems or []


# The body limit of the server a request came through (set by bot.http.server).
BODY_LIMIT = web.RequestKey("body_limit", int)


def body_too_large(limit: int | None) -> str:
    """The one wording of a 413, whether the size was announced (Content-Length) or found reading chunks."""
    if limit is None:
        return "body too large (http.max_body_bytes)"
    return f"body too large: the limit is {limit} bytes (http.max_body_bytes)"


async def read_json_body(request: web.Request) -> bytes:
    """The raw body of a JSON POST, or ``PayloadError`` (405, 415, 413)."""
    if request.method != "POST":
        raise PayloadError(405, "use POST")
    if request.content_type != "application/json":
        raise PayloadError(415, "expected Content-Type: application/json")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        # A chunked body (no Content-Length) cut off at the server's limit.
        raise PayloadError(413, body_too_large(request.get(BODY_LIMIT))) from None


def decode_json_object(body: bytes) -> dict[str, Any]:
    """UTF-8 JSON whose top level is an object, nested at most MAX_JSON_DEPTH deep; else 400."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError(400, "body is not UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        # The message holds a position, never the input.
        raise PayloadError(
            400, f"invalid JSON: {error.msg} (line {error.lineno} column {error.colno})"
        ) from None
    except RecursionError:
        raise PayloadError(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        # Not a JSONDecodeError: Python refuses integers of more than 4,300
        # digits (sys.get_int_max_str_digits, CVE-2020-10735) with a plain
        # ValueError, which would otherwise escape as a 500.
        raise PayloadError(400, "invalid JSON: a number has too many digits") from None
    if _depth_exceeds(data, MAX_JSON_DEPTH):
        raise PayloadError(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(data, dict):
        raise PayloadError(400, "invalid payload", ["(root): must be a JSON object"])
    return data


def describe_validation_error(error: ValidationError) -> list[str]:
    """One ``path: problem`` line per error, without the offending input."""
    lines = []
    for item in error.errors(include_input=False, include_url=False, include_context=False)[:_MAX_PROBLEMS]:
        path = ".".join(_clip(str(part)) for part in item["loc"]) or "(root)"
        lines.append(f"{path}: {item['msg']}")
    if error.error_count() > _MAX_PROBLEMS:
        lines.append(f"… and {error.error_count() - _MAX_PROBLEMS} more")
    return lines


def problem(
    status: int, detail: str, *, problems: list[str] | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON problem answer: ``{"error": detail, "problems": [...]}``."""
    body: dict[str, Any] = {"error": detail}
    if problems:
        body["problems"] = problems
    return web.json_response(body, status=status, headers=headers)


def _clip(part: str) -> str:
    return part if len(part) <= _MAX_PATH_PART else part[: _MAX_PATH_PART - 1] + "…"


def _depth_exceeds(data: Any, limit: int) -> bool:
    """Whether containers nest deeper than ``limit`` (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children: Any
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
