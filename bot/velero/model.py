"""Typed, read-only views of Velero's objects, built from the dicts the API server sends.

The views never raise on odd input: a missing or mistyped field becomes None,
0 or "", because one malformed object must not stop the relay from reporting
the others. Free text from the cluster (failure reasons, validation errors,
storage location messages) is cut to a sane length here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

SCHEDULE_LABEL: Final = "velero.io/schedule-name"
# Longest free-text field quoted in a message, and how many validation errors.
_TEXT_MAX: Final = 300
_VALIDATION_ERRORS_MAX: Final = 10


class RunKind(StrEnum):
    """What ran: a backup or a restore (both end in the same phases)."""

    BACKUP = "backup"
    RESTORE = "restore"


class Phase:
    """Phase names of Backups and Restores (``status.phase``)."""

    NEW: Final = "New"
    COMPLETED: Final = "Completed"
    PARTIALLY_FAILED: Final = "PartiallyFailed"
    FAILED: Final = "Failed"
    FAILED_VALIDATION: Final = "FailedValidation"
    DELETING: Final = "Deleting"


# The phases a backup or restore never leaves (but for Deleting, which is not an outcome).
TERMINAL_PHASES: Final = frozenset(
    {Phase.COMPLETED, Phase.PARTIALLY_FAILED, Phase.FAILED, Phase.FAILED_VALIDATION}
)
# Phases in which a backup produced something to restore from.
USABLE_PHASES: Final = frozenset({Phase.COMPLETED, Phase.PARTIALLY_FAILED})

LOCATION_AVAILABLE: Final = "Available"
LOCATION_UNAVAILABLE: Final = "Unavailable"


@dataclass(frozen=True, slots=True)
class RunView:
    """A Backup or a Restore, as far as the relay cares."""

    kind: RunKind
    namespace: str
    name: str
    uid: str
    phase: str
    # Backups: the velero.io/schedule-name label; restores: spec.scheduleName.
    schedule: str | None
    # Restores only: the backup restored from (spec.backupName).
    backup_name: str | None
    created: datetime | None
    started: datetime | None
    completed: datetime | None
    expiration: datetime | None
    errors: int
    warnings: int
    items_done: int | None
    items_total: int | None
    failure_reason: str | None
    validation_errors: tuple[str, ...]
    storage_location: str | None

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def begun_at(self) -> datetime | None:
        """When the run began: its start, or its creation while it has not started.

        A Backup object is created when its schedule fires, so for missed
        schedules a created-but-queued backup counts as started.
        """
        return self.started or self.created

    @property
    def ended_at(self) -> datetime | None:
        """When the outcome happened; a failed validation has no completion time, so fall back."""
        return self.completed or self.started or self.created

    @property
    def duration(self) -> timedelta | None:
        if self.started is None or self.completed is None:
            return None
        return max(timedelta(0), self.completed - self.started)

    @property
    def outcome_key(self) -> str:
        """Identity of this run's outcome across restarts, relists and re-syncs.

        Not the uid: Velero's backup sync re-creates Backup objects from the
        storage location (new uid, same name and start time) when their
        objects are deleted, and that must not report an old failure again.
        A new run under a reused name has a new start time.
        """
        begun = self.begun_at
        stamp = begun.strftime("%Y-%m-%dT%H:%M:%SZ") if begun is not None else self.uid
        return f"{self.namespace}/{self.name}@{stamp}"


@dataclass(frozen=True, slots=True)
class ScheduleView:
    namespace: str
    name: str
    uid: str
    cron: str
    paused: bool
    phase: str
    created: datetime | None
    last_backup: datetime | None
    validation_errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LocationView:
    """A BackupStorageLocation."""

    namespace: str
    name: str
    phase: str
    message: str | None
    last_validated: datetime | None
    default: bool
    provider: str | None


def parse_run(kind: RunKind, obj: dict[str, Any]) -> RunView:
    metadata = _dict(obj.get("metadata"))
    spec = _dict(obj.get("spec"))
    status = _dict(obj.get("status"))
    progress = _dict(status.get("progress"))
    if kind is RunKind.BACKUP:
        schedule = _text(_dict(metadata.get("labels")).get(SCHEDULE_LABEL))
        backup_name = None
        items_done = _count(progress.get("itemsBackedUp"))
        location = _text(spec.get("storageLocation"))
    else:
        schedule = _text(spec.get("scheduleName"))
        backup_name = _text(spec.get("backupName"))
        items_done = _count(progress.get("itemsRestored"))
        location = None
    return RunView(
        kind=kind,
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
        phase=str(status.get("phase") or ""),
        schedule=schedule,
        backup_name=backup_name,
        created=parse_time(metadata.get("creationTimestamp")),
        started=parse_time(status.get("startTimestamp")),
        completed=parse_time(status.get("completionTimestamp")),
        expiration=parse_time(status.get("expiration")),
        errors=_count(status.get("errors")) or 0,
        warnings=_count(status.get("warnings")) or 0,
        items_done=items_done,
        items_total=_count(progress.get("totalItems")),
        failure_reason=_text(status.get("failureReason")),
        validation_errors=_texts(status.get("validationErrors")),
        storage_location=location,
    )


def parse_schedule(obj: dict[str, Any]) -> ScheduleView:
    metadata = _dict(obj.get("metadata"))
    spec = _dict(obj.get("spec"))
    status = _dict(obj.get("status"))
    return ScheduleView(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
        cron=str(spec.get("schedule") or "").strip(),
        paused=spec.get("paused") is True,
        phase=str(status.get("phase") or ""),
        created=parse_time(metadata.get("creationTimestamp")),
        last_backup=parse_time(status.get("lastBackup")),
        validation_errors=_texts(status.get("validationErrors")),
    )


def parse_location(obj: dict[str, Any]) -> LocationView:
    metadata = _dict(obj.get("metadata"))
    spec = _dict(obj.get("spec"))
    status = _dict(obj.get("status"))
    return LocationView(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        phase=str(status.get("phase") or ""),
        message=_text(status.get("message")),
        last_validated=parse_time(status.get("lastValidationTime")),
        default=spec.get("default") is True,
        provider=_text(spec.get("provider")),
    )


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp as Kubernetes writes it (``2024-01-02T03:04:05Z``), in UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # Year 1 or 9999 with an offset falls outside datetime (found by fuzzing):
        # no usable time, as for any other unreadable one.
        return None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: object) -> int | None:
    # bool is an int: a stray true must not become "1 item".
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _text(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    text = " ".join(value.split())
    return text if len(text) <= _TEXT_MAX else text[: _TEXT_MAX - 1] + "…"


def _texts(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    texts = [text for item in value if (text := _text(item)) is not None]
    if len(texts) > _VALIDATION_ERRORS_MAX:
        left_out = len(texts) - _VALIDATION_ERRORS_MAX
        texts = [*texts[:_VALIDATION_ERRORS_MAX], f"… and {left_out} more"]
    return tuple(texts)
