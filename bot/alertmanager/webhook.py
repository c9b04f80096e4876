"""``POST /hooks/alertmanager``: Alertmanager's webhook (version 4), validated and handed to the relay.

Alertmanager retries a notification only when the answer is 5xx; a 4xx is
final. So the answers are:

- 200 once everything the notification must deliver is committed to the store;
- 400 (invalid JSON, wrong shape: the body names the field path, never the
  input), 403 (a token scoped to another receiver), 405, 413 (too large),
  415 (not JSON) — retrying would not help, and nothing is stored;
- 503 when the store cannot keep it now (disk full, database locked): the
  retry may succeed. Nothing is half-written: one transaction or none.

The bearer token itself is checked by ``bot.webhooks.server`` before this
handler runs; it tells us the token's scope (``TOKEN_SCOPE``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Literal, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.webhooks.common import (
    PayloadError,
    StoreUnavailableError,
    decode_json_object,
    describe_validation_error,
    problem,
    read_json_body,
)
from bot.webhooks.server import TOKEN_SCOPE, HookHandler

__all__ = [
    "AlertIntake",
    "WebhookAlert",
    "WebhookPayload",
    "alertmanager_handler",
    "parse_payload",
    "split_heartbeats",
]

log = logging.getLogger(__name__)

AlertStatus = Literal["firing", "resolved"]


class _Model(BaseModel):
    # Alertmanager adds fields over versions (notification_reason in 0.32):
    # unknown ones are kept, not refused; the fields we use are validated.
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class WebhookAlert(_Model):
    """One alert of a notification."""

    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    # "0001-01-01T00:00:00Z" while firing with no end known.
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    # Stable id of the alert (a hash of its labels).
    fingerprint: str = Field(min_length=1, max_length=256)


class WebhookPayload(_Model):
    """One notification about one alert group (webhook version 4)."""

    version: Literal["4"]
    # Stable id of the group: route path + group labels.
    group_key: str = Field(alias="groupKey", min_length=1, max_length=16_384)
    # Alerts left out because of the receiver's max_alerts.
    truncated_alerts: int = Field(default=0, ge=0, alias="truncatedAlerts")
    status: AlertStatus
    receiver: str = Field(min_length=1, max_length=1_024)
    group_labels: dict[str, str] = Field(alias="groupLabels")
    common_labels: dict[str, str] = Field(alias="commonLabels")
    common_annotations: dict[str, str] = Field(alias="commonAnnotations")
    external_url: str = Field(alias="externalURL", max_length=4_096)
    alerts: list[WebhookAlert]


class AlertIntake(Protocol):
    async def accept(self, payload: WebhookPayload) -> None:
        """Commit everything the notification must deliver; raise ``StoreUnavailableError`` if not."""
        ...


def parse_payload(body: bytes) -> WebhookPayload:
    """Decode and validate a webhook body, or raise ``PayloadError`` (400)."""
    data = decode_json_object(body)
    try:
        return WebhookPayload.model_validate(data)
    except ValidationError as error:
        raise PayloadError(400, "invalid payload", describe_validation_error(error)) from None


def split_heartbeats(
    payload: WebhookPayload, is_heartbeat: Callable[[Mapping[str, str]], bool]
) -> tuple[list[WebhookAlert], list[WebhookAlert]]:
    """(heartbeat alerts, the alerts to relay): a Watchdog is never posted to a room."""
    beats: list[WebhookAlert] = []
    relayed: list[WebhookAlert] = []
    for alert in payload.alerts:
        (beats if is_heartbeat(alert.labels) else relayed).append(alert)
    return beats, relayed


def alertmanager_handler(intake: AlertIntake) -> HookHandler:
    """The aiohttp handler behind ``/hooks/alertmanager`` (authentication already done)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            payload = await _read_payload(request)
        except PayloadError as error:
            log.info("refused Alertmanager notification: %s (%d problems)", error.detail, len(error.problems))
            headers = {"Allow": "POST"} if error.status == 405 else None
            return problem(error.status, error.detail, problems=error.problems, headers=headers)
        scope = request.get(TOKEN_SCOPE)
        if scope is not None and scope != payload.receiver:
            log.warning("token scoped to receiver %r used for another receiver; refused", scope)
            return problem(403, "this token is not valid for that receiver")
        try:
            await intake.accept(payload)
        except StoreUnavailableError as error:
            log.warning("Alertmanager notification not stored (%s); answered 503 so it is retried", error)
            return problem(503, "store unavailable, retry later", headers={"Retry-After": "5"})
        return web.json_response({"status": "accepted"})

    return handle


async def _read_payload(request: web.Request) -> WebhookPayload:
    return parse_payload(await read_json_body(request))
