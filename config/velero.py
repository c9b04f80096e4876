"""Settings of the Velero capability: the relay (outcomes, missed schedules, locations) and restore drills.

Every key has a default, so an empty ``velero:`` section validates; the relay
is off until ``enabled`` is set, and then needs ``kubernetes.enabled`` (checked
when the feature is built) and at least one room.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from config.base import PermissionRule, Section, check_room_ids
from config.cron import CronError, parse_cron

# A namespace is a DNS label.
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")

# Scratch namespaces are "<prefix>-<8 hex id>-<namespace>": the prefix leaves room.
_PREFIX_MAX = 30


class DrillSettings(Section):
    """Who may ask for a drill, who approves it, what it restores and how it is checked and cleaned up."""

    enabled: bool = False
    # Who may send !restore-drill. Open ({}) means anyone the
    # permissions.commands.restore-drill rule lets run the command.
    requesters: PermissionRule = Field(default_factory=PermissionRule)
    # Whose ✅ (or !approve <id>) counts. Must name users or a power level.
    approvers: PermissionRule = Field(default_factory=PermissionRule)
    approvals_required: int = Field(default=1, ge=1, le=10)
    # How long a drill request stays open for approval.
    expires_after_s: float = Field(default=1800.0, ge=1.0, le=7 * 24 * 3600.0)
    # The requester's own ✅ does not count.
    four_eyes: bool = True
    # As for gated apps: only `!approve <id>` sent encrypted from a
    # cross-signed device approves, and !restore-drill must come from one.
    require_cross_signed_device: bool = False
    # Scratch namespaces are named <scratch_prefix>-<drill id>-<backed-up namespace>
    # and carry the label readybot.io/restore-drill=<drill id>; only such
    # namespaces are ever deleted.
    scratch_prefix: str = "readybot-drill"
    # The namespaces to restore when the backup does not name its own (it
    # backed up every namespace, or used wildcards); when it does, only those
    # of them listed here (all of them if this is empty).
    namespaces: list[str] = Field(default_factory=list)
    # Velero's spec.restorePVs: restore volume snapshots / file-system backups
    # too. Without them PVCs may stay Pending, which the report shows.
    restore_pvs: bool = True
    # After the Restore ended: how long restored pods get to become Ready
    # (0: pods are counted, not waited for).
    pods_ready_timeout_s: float = Field(default=300.0, ge=0.0, le=6 * 3600.0)
    # Keep the scratch namespaces this long after the report for inspection
    # (0: delete them right after the report).
    keep_namespaces_s: float = Field(default=0.0, ge=0.0, le=30 * 86_400.0)
    # Delete the Restore object with the scratch namespaces (kept by default:
    # `velero restore describe/logs` need it).
    delete_restore: bool = False
    # How often the Restore and the scratch namespaces are read while a drill runs.
    poll_interval_s: float = Field(default=5.0, ge=0.05, le=300.0)
    # A drill not finished after this long is reported as an error and no longer followed.
    follow_timeout_s: float = Field(default=4 * 3600.0, ge=1.0, le=48 * 3600.0)
    # Scheduled drills (cron, as Velero reads it, e.g. "0 4 1 * *"); none when unset.
    schedule: str | None = None
    # What a scheduled drill restores: a Velero schedule's newest Completed
    # backup (by the schedule's name) or one backup; unset: the newest
    # Completed backup in the namespace.
    scheduled_target: str | None = None
    # Where scheduled drills post their prompt and report (room id); default: velero.rooms[0].
    scheduled_room: str | None = None
    # A scheduled drill starts without anyone's approval only when this is true.
    scheduled_without_approval: bool = False

    @field_validator("scratch_prefix")
    @classmethod
    def _prefix_shape(cls, value: str) -> str:
        if len(value) > _PREFIX_MAX or not _LABEL.match(value):
            raise ValueError(f"must be lower case letters, digits and '-', at most {_PREFIX_MAX} characters")
        return value

    @field_validator("namespaces")
    @classmethod
    def _namespace_shapes(cls, value: list[str]) -> list[str]:
        for name in value:
            if len(name) > 63 or not _LABEL.match(name):
                raise ValueError("each must be a Kubernetes namespace name (lower case, digits, '-')")
        return value

    @field_validator("schedule")
    @classmethod
    def _cron_shape(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_cron(value)
            except CronError as error:
                raise ValueError(f"not a cron expression Velero would read: {error}") from None
        return value

    @field_validator("scheduled_room")
    @classmethod
    def _room_id(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("!") or any(ch.isspace() for ch in value)):
            raise ValueError("must be a room id (!…)")
        return value

    @model_validator(mode="after")
    def _approvers_when_enabled(self) -> DrillSettings:
        if self.enabled and self.approvers.is_open:
            raise ValueError(
                "approvers: set users or min_power_level; a drill writes into the cluster and needs "
                "a second person's approval"
            )
        return self


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
    # Restore drills (!restore-drill, scheduled drills): docs/velero.md, "Restore drills".
    drills: DrillSettings = Field(default_factory=DrillSettings)

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
        if self.drills.enabled and not self.enabled:
            raise ValueError("velero.drills.enabled needs velero.enabled")
        return self

    @property
    def digest_hour_minute(self) -> tuple[int, int]:
        hour, minute = self.digest_time.split(":")
        return int(hour), int(minute)
