"""Settings of Velero restore drills (``velero.drills``): restore a backup into scratch namespaces.

A drill writes into the cluster, so it is gated like a sync (docs/approvals.md):
``approvers`` must name people, and a scheduled drill runs without approval
only when ``scheduled_without_approval`` says so explicitly. Every key has a
default, so an empty ``drills:`` section validates; drills are off until
``enabled``.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from config.base import PermissionRule, Section
from config.cron import CronError, parse_cron

# A namespace is a DNS label; the prefix leaves room for "-<8 hex id>-<namespace>".
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
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
