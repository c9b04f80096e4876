"""Settings of the Velero relay: backup and restore outcomes, missed schedules, storage locations.

Every key has a default, so an empty ``velero:`` section validates; the relay
is off until ``enabled`` is set, and then needs ``kubernetes.enabled`` (checked
when the feature is built) and at least one room.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from config.base import Section, check_room_ids

# A namespace is a DNS label.
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class VeleroSettings(Section):
    """Which Velero to follow and what is worth a message."""

    enabled: bool = False
    # Where Velero's Backups, Restores, Schedules and storage locations live.
    namespace: str = "velero"
    # Room ids (!…) for every Velero message.
    rooms: list[str] = Field(default_factory=list)
    # Completed backups and restores: "off" (never posted), "digest" (one
    # quiet message a day at digest_time) or "each" (one message each).
    # Failures, partial failures and failed validations are always posted.
    completed: Literal["off", "digest", "each"] = "digest"
    # When the daily digest of completed runs is posted, HH:MM in UTC.
    digest_time: str = "08:00"
    # A schedule's run counts as missed when no backup was started for it
    # this long after the time its cron expression gave.
    missed_grace_s: float = Field(default=3_600.0, ge=1, le=7 * 86_400)
    # How often missed schedules (and storage locations) are evaluated.
    check_interval_s: float = Field(default=60.0, ge=0.2, le=3_600)
    # Backups shown by `!backups <schedule>`.
    history_length: int = Field(default=10, ge=1, le=50)
    # Outcomes older than this are never posted (e.g. after a long outage of
    # the bot); they are remembered for twice as long, then forgotten.
    catch_up_max_age_s: float = Field(default=7 * 86_400.0, ge=3_600, le=90 * 86_400)
    # When one listing (start-up, or a relist after the watch expired) finds
    # more unreported outcomes than this, they go out as one summary message.
    summary_threshold: int = Field(default=5, ge=1, le=100)

    @field_validator("namespace")
    @classmethod
    def _namespace_shape(cls, value: str) -> str:
        if len(value) > 63 or not _LABEL.match(value):
            raise ValueError("must be a Kubernetes namespace name (lower case, digits, '-')")
        return value

    @field_validator("rooms")
    @classmethod
    def _room_ids(cls, value: list[str]) -> list[str]:
        return check_room_ids(value)

    @field_validator("digest_time")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        if not _TIME_OF_DAY.match(value):
            raise ValueError("must be HH:MM (24 h, UTC), e.g. 08:00")
        return value

    @model_validator(mode="after")
    def _rooms_when_enabled(self) -> VeleroSettings:
        if self.enabled and not self.rooms:
            raise ValueError("velero.enabled needs rooms: where should backup messages go?")
        return self

    @property
    def digest_hour_minute(self) -> tuple[int, int]:
        hour, minute = self.digest_time.split(":")
        return int(hour), int(minute)
