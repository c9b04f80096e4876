"""``POST /hooks/alertmanager``: Alertmanager's webhook (version 4), validated and handed to the relay.

Alertmanager retries a notification only when the answer is 5xx; a 4xx is
final. So the answers are:

- 200 once everything the notification must deliver is committed to the store;
- 400 (invalid JSON, wrong shape: the body names the field path, never the
  input), 403 (a token scoped to another receiver), 405, 413 (too large),
  415 (not JSON) — retrying would not help, and nothing is stored;
- 503 when the store cannot keep it now (disk full, database locked): the
  retry may succeed. Nothing is half-written: one transaction or none.

The bearer token itself is checked by ``bot.http.server`` before this
handler runs; it tells us the token's scope (``TOKEN_SCOPE``).
"""

from __future__ import annotations

import logging
from typing import Protocol

from aiohttp import web
from pydantic import ValidationError

from bot.alertmanager.payload import WebhookPayload
from bot.http.common import (
    PayloadError,
    StoreUnavailableError,
    decode_json_object,
    describe_validation_error,
    problem,
    read_json_body,
)
from bot.http.server import TOKEN_SCOPE, HookHandler

__all__ = ["AlertIntake", "alertmanager_handler", "parse_payload"]

log = logging.getLogger(__name__)


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
