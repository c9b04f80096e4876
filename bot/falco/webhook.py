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

The bearer token is checked by ``bot.http.server`` before this handler
runs (falcosidekick: ``webhook.customheaders: "Authorization:Bearer …"``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.falco.events import MAX_VALUE_CHARS, FalcoEvent, Outcome, clip_chars, field_text
from bot.http.common import (
    PayloadError,
    StoreUnavailableError,
    decode_json_object,
    describe_validation_error,
    problem,
    read_json_body,
)
from bot.http.server import HookHandler
from config.falco import Priority

__all__ = [
    "FalcoIntake",
    "FalcoPayload",
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
    data = decode_json_object(body)
    try:
        return FalcoPayload.model_validate(data).event()
    except ValidationError as error:
        raise PayloadError(400, "invalid payload", describe_validation_error(error)) from None
    except (OverflowError, OSError, ValueError):
        # A date-time pydantic accepts but that has no epoch value on this platform.
        raise PayloadError(400, "invalid payload", ["time: out of range"]) from None


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
            return problem(error.status, error.detail, problems=error.problems, headers=headers)
        try:
            outcome = await intake.accept(event)
        except StoreUnavailableError as error:
            log.warning("Falco event not stored (%s); answered 503", error)
            metrics.requests.labels(status="503").inc()
            return problem(503, "store unavailable, retry later", headers={"Retry-After": "5"})
        metrics.requests.labels(status="200").inc()
        return web.json_response({"status": "accepted", "outcome": outcome})

    return handle


async def _read_event(request: web.Request) -> FalcoEvent:
    return parse_event(await read_json_body(request))
