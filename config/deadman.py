"""Settings of the dead-man's switch on Alertmanager's Watchdog (issue 3)."""

from __future__ import annotations

import re

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator

from config.base import Section, check_room_ids

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class SecondaryChannelSettings(Section):
    """Where alarms also go, off Matrix: the homeserver may be what failed.

    A plain ``POST`` with the message as text body and ntfy's headers
    (``Title``, ``Priority``, ``Tags``), so an ntfy topic URL works as it is and
    any webhook receiver can read it.
    """

    url: AnyHttpUrl | None = None
    # Sent as "Authorization: Bearer <token>"; never logged.
    token: SecretStr | None = None
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    # Quick tries per delivery round; a notice still unsent is tried again on
    # the next check, until give_up_after_s has passed since it was raised.
    attempts: int = Field(default=3, ge=1, le=10)
    give_up_after_s: float = Field(default=3_600.0, ge=60, le=7 * 86_400)

    @field_validator("token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("must not be empty (leave it unset for no token)")
        return value


class SelfPingSettings(Section):
    """The bot's own heartbeat to an external monitor (healthchecks.io style), so its death is noticed."""

    url: AnyHttpUrl | None = None
    interval_s: float = Field(default=60.0, ge=1, le=3_600)
    timeout_s: float = Field(default=10.0, gt=0, le=60)


class DeadmanSettings(Section):
    """Watchdog heartbeats per source, and the alarm when one goes quiet."""

    # Off: heartbeats are still recognised (and never relayed), but nothing is
    # tracked and no alarm is raised.
    enabled: bool = True
    # An alert whose labels include all of these is a heartbeat, not an alert.
    heartbeat_matchers: dict[str, str] = Field(default_factory=lambda: {"alertname": "Watchdog"})
    # Which label names the source of a heartbeat (e.g. "cluster"); when unset
    # or missing from the notification, the sending Alertmanager's externalURL.
    source_label: str | None = None
    # A source is down when no heartbeat arrived for this long.
    threshold_s: float = Field(default=300.0, ge=1, le=7 * 86_400)
    check_interval_s: float = Field(default=30.0, ge=0.2, le=3_600)
    # Room ids (!…) for alarms and recoveries; empty: the Alertmanager relay's
    # default rooms.
    rooms: list[str] = Field(default_factory=list)
    # Sources watched from start-up even before their first heartbeat, so a
    # Watchdog route that never worked is noticed too.
    expected_sources: list[str] = Field(default_factory=list)
    secondary: SecondaryChannelSettings = Field(default_factory=SecondaryChannelSettings)
    self_ping: SelfPingSettings = Field(default_factory=SelfPingSettings)

    @field_validator("heartbeat_matchers")
    @classmethod
    def _matchers_shape(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("needs at least one label, or every alert would be a heartbeat")
        for name in value:
            if not _LABEL_NAME.match(name):
                raise ValueError("label names must match [a-zA-Z_][a-zA-Z0-9_]*")
        return value

    @field_validator("source_label")
    @classmethod
    def _source_label_shape(cls, value: str | None) -> str | None:
        if value is not None and not _LABEL_NAME.match(value):
            raise ValueError("must be a label name ([a-zA-Z_][a-zA-Z0-9_]*)")
        return value

    @field_validator("rooms")
    @classmethod
    def _room_ids(cls, value: list[str]) -> list[str]:
        return check_room_ids(value)

    @model_validator(mode="after")
    def _interval_below_threshold(self) -> DeadmanSettings:
        # A check less often than the threshold would let outages go unnoticed
        # for up to twice the threshold.
        if self.check_interval_s > self.threshold_s:
            raise ValueError("deadman.check_interval_s must not exceed deadman.threshold_s")
        return self
