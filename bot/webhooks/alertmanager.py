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

import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.webhooks.server import TOKEN_SCOPE, HookHandler

__all__ = [
    "MAX_JSON_DEPTH",
    "AlertIntake",
    "PayloadError",
    "StoreUnavailableError",
    "WebhookAlert",
    "WebhookPayload",
    "alertmanager_handler",
    "parse_payload",
    "split_heartbeats",
]

log = logging.getLogger(__name__)

# A real payload nests 4 levels (payload → alerts → alert → labels). Anything
# far deeper is an attack on the parser or on whoever walks the data later.
MAX_JSON_DEPTH = 32
# At most this many problems are listed in a 400 answer, each path part cut to
# this many characters: a label name is attacker-controlled text.
_MAX_PROBLEMS = 10
_MAX_PATH_PART = 64

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


class PayloadError(Exception):
    """A request that retrying cannot fix: answered 4xx with ``detail`` (and field ``problems``)."""

    def __init__(self, status: int, detail: str, problems: list[str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.problems = problems or []


class StoreUnavailableError(Exception):
    """The notification could not be committed now; answered 503 so Alertmanager retries."""


class AlertIntake(Protocol):
    async def accept(self, payload: WebhookPayload) -> None:
        """Commit everything the notification must deliver; raise ``StoreUnavailableError`` if not."""
        ...


def parse_payload(body: bytes) -> WebhookPayload:
    """Decode and validate a webhook body, or raise ``PayloadError`` (400)."""
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
    if not isinstance(data, dict):
        raise PayloadError(400, "invalid payload", ["(root): must be a JSON object"])
    try:
        return WebhookPayload.model_validate(data)
    except ValidationError as error:
        raise PayloadError(400, "invalid payload", describe_validation_error(error)) from None


def describe_validation_error(error: ValidationError) -> list[str]:
    """One ``path: problem`` line per error, without the offending input."""
    lines = []
    for item in error.errors(include_input=False, include_url=False, include_context=False)[:_MAX_PROBLEMS]:
        path = ".".join(_clip(str(part)) for part in item["loc"]) or "(root)"
        lines.append(f"{path}: {item['msg']}")
    if error.error_count() > _MAX_PROBLEMS:
        lines.append(f"… and {error.error_count() - _MAX_PROBLEMS} more")
    return lines


def _clip(part: str) -> str:
    return part if len(part) <= _MAX_PATH_PART else part[: _MAX_PATH_PART - 1] + "…"


def _depth_exceeds(data: Any, limit: int) -> bool:
    """Whether containers nest deeper than ``limit`` (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


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
            return _problem(error.status, error.detail, problems=error.problems, headers=headers)
        scope = request.get(TOKEN_SCOPE)
        if scope is not None and scope != payload.receiver:
            log.warning("token scoped to receiver %r used for another receiver; refused", scope)
            return _problem(403, "this token is not valid for that receiver")
        try:
            await intake.accept(payload)
        except StoreUnavailableError as error:
            log.warning("Alertmanager notification not stored (%s); answered 503 so it is retried", error)
            return _problem(503, "store unavailable, retry later", headers={"Retry-After": "5"})
        return web.json_response({"status": "accepted"})

    return handle


async def _read_payload(request: web.Request) -> WebhookPayload:
    if request.method != "POST":
        raise PayloadError(405, "use POST")
    if request.content_type != "application/json":
        raise PayloadError(415, "expected Content-Type: application/json")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        # A chunked body (no Content-Length) cut off at the server's limit.
        raise PayloadError(413, "body too large") from None
    return parse_payload(body)


def _problem(
    status: int, detail: str, *, problems: list[str] | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"error": detail}
    if problems:
        body["problems"] = problems
    return web.json_response(body, status=status, headers=headers)
