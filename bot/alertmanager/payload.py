"""Alertmanager's webhook payload (version 4) as the relay reads it: pure, no HTTP.

``bot.alertmanager.webhook`` (the aiohttp side) validates a body into a
``WebhookPayload``; the relay takes Watchdog heartbeats out of it with
``split_heartbeats`` and relays the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AlertStatus", "WebhookAlert", "WebhookPayload", "split_heartbeats"]

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


def split_heartbeats(
    payload: WebhookPayload, is_heartbeat: Callable[[Mapping[str, str]], bool]
) -> tuple[list[WebhookAlert], list[WebhookAlert]]:
    """(heartbeat alerts, the alerts to relay): a Watchdog is never posted to a room."""
    beats: list[WebhookAlert] = []
    relayed: list[WebhookAlert] = []
    for alert in payload.alerts:
        (beats if is_heartbeat(alert.labels) else relayed).append(alert)
    return beats, relayed
