"""``POST /hooks/falco``: falcosidekick's webhook output, validated and handed to the relay.

falcosidekick sends one POST per Falco event and neither retries nor
buffers, so the answer must be fast and mean "kept":

- 200 once the event's effect (counters, aggregate, outbox rows) is
  committed; the falcosidekick test event ("Test rule") and events below
  the minimum priority are counted and answered 200 at once;
- 400 (invalid JSON, wrong shape: the body names the field path, never the
  input), 405, 413 (too large), 415 (not JSON): nothing is stored;
- 503 when the store cannot keep it now. falcosidekick will not retry, but
  it counts and logs the failure, which a 200 would hide.

The bearer token is checked by ``bot.webhooks.server`` before this handler
runs (falcosidekick: ``webhook.customheaders: "Authorization:Bearer …"``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.relays.falco import MAX_VALUE_CHARS, FalcoEvent, Outcome, clip_chars, field_text
from bot.webhooks.alertmanager import (
    MAX_JSON_DEPTH,
    PayloadError,
    StoreUnavailableError,
    describe_validation_error,
)
from bot.webhooks.server import HookHandler
from config.falco import Priority

__all__ = [
    "FalcoIntake",
    "FalcoPayload",
    "StoreUnavailableError",
    "WebhookMetrics",
    "falco_handler",
    "parse_event",
]

log = logging.getLogger(__name__)

# A Falco event has at most ~100 output fields; far more is not falcosidekick.
_MAX_FIELDS = 1_000


class FalcoPayload(BaseModel):
    """One event as falcosidekick posts it (``types.FalcoPayload``)."""

    # falcosidekick adds fields over versions: unknown ones are ignored, not refused.
    model_config = ConfigDict(extra="ignore", frozen=True)

    uuid: str | None = Field(default=None, max_length=256)
    output: str
    priority: Priority
    rule: str = Field(min_length=1, max_length=1_024)
    # RFC 3339 with nanoseconds; kept to the microsecond.
    time: datetime
    # Values are strings or numbers (evt.time is a 19-digit integer, kept exact).
    output_fields: dict[str, Any] = Field(default_factory=dict, max_length=_MAX_FIELDS)
    source: str = Field(default="", max_length=256)
    tags: list[str] = Field(default_factory=list, max_length=256)
    hostname: str = Field(default="", max_length=1_024)

    @field_validator("time", mode="before")
    @classmethod
    def _rfc3339_text(cls, value: object) -> object:
        # pydantic would read a bare number as epoch seconds; falcosidekick
        # always sends text, so a number is a sender bug worth a 400.
        if not isinstance(value, str):
            raise ValueError("must be an RFC 3339 date-time string")
        return value

    @field_validator("rule")
    @classmethod
    def _rule_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    def event(self) -> FalcoEvent:
        moment = self.time if self.time.tzinfo is not None else self.time.replace(tzinfo=UTC)
        fields = {
            clip_chars(name, MAX_VALUE_CHARS): text
            for name, value in self.output_fields.items()
            if (text := field_text(value)) is not None
        }
        return FalcoEvent(
            rule=self.rule,
            priority=self.priority,
            output=self.output,
            time=moment.timestamp(),
            hostname=self.hostname,
            source=self.source,
            tags=tuple(self.tags),
            fields=fields,
            uuid=self.uuid,
        )


class FalcoIntake(Protocol):
    async def accept(self, event: FalcoEvent) -> Outcome:
        """Count the event and commit what it changes; raise ``StoreUnavailableError`` if the store cannot."""
        ...


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "readybot_falco_webhook_requests",
            "Requests to /hooks/falco that reached the handler, by HTTP status.",
            ["status"],
            registry=registry,
        )


def parse_event(body: bytes) -> FalcoEvent:
    """Decode and validate a webhook body, or raise ``PayloadError`` (400)."""
    data = _decode(body)
    if not isinstance(data, dict):
        raise PayloadError(400, "invalid payload", ["(root): must be a JSON object"])
    try:
        return FalcoPayload.model_validate(data).event()
    except ValidationError as error:
        raise PayloadError(400, "invalid payload", describe_validation_error(error)) from None
    except (OverflowError, OSError, ValueError):
        # A date-time pydantic accepts but that has no epoch value on this platform.
        raise PayloadError(400, "invalid payload", ["time: out of range"]) from None


def _decode(body: bytes) -> Any:
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
    if _depth_exceeds(data, MAX_JSON_DEPTH):
        raise PayloadError(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return data


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


def falco_handler(intake: FalcoIntake, metrics: WebhookMetrics) -> HookHandler:
    """The aiohttp handler behind ``/hooks/falco`` (authentication already done)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            event = await _read_event(request)
        except PayloadError as error:
            # The detail names a field path or a JSON position, never event content.
            log.info("refused Falco event: %s (%d problems)", error.detail, len(error.problems))
            metrics.requests.labels(status=str(error.status)).inc()
            headers = {"Allow": "POST"} if error.status == 405 else None
            return _problem(error.status, error.detail, problems=error.problems, headers=headers)
        try:
            outcome = await intake.accept(event)
        except StoreUnavailableError as error:
            log.warning("Falco event not stored (%s); answered 503", error)
            metrics.requests.labels(status="503").inc()
            return _problem(503, "store unavailable, retry later", headers={"Retry-After": "5"})
        metrics.requests.labels(status="200").inc()
        return web.json_response({"status": "accepted", "outcome": outcome})

    return handle


async def _read_event(request: web.Request) -> FalcoEvent:
    if request.method != "POST":
        raise PayloadError(405, "use POST")
    if request.content_type != "application/json":
        raise PayloadError(415, "expected Content-Type: application/json")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        # A chunked body (no Content-Length) cut off at the server's limit.
        raise PayloadError(413, "body too large") from None
    return parse_event(body)


def _problem(
    status: int, detail: str, *, problems: list[str] | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"error": detail}
    if problems:
        body["problems"] = problems
    return web.json_response(body, status=status, headers=headers)
