"""Builders of Velero objects (velero.io/v1) as Velero's controllers write them, for the relay's tests.

Only fields listed in ``tests/kube/crds.py`` (checked against the upstream CRDs) are used.
Times are RFC 3339 strings in UTC, whole seconds, as the API server sends them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

API_VERSION = "velero.io/v1"
SCHEDULE_LABEL = "velero.io/schedule-name"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def backup(
    name: str,
    phase: str | None = None,
    *,
    schedule: str | None = None,
    created: datetime | None = None,
    started: datetime | None = None,
    completed: datetime | None = None,
    errors: int = 0,
    warnings: int = 0,
    items: int | None = None,
    total: int | None = None,
    failure_reason: str | None = None,
    validation_errors: list[str] | None = None,
    namespaces: list[str] | None = None,
) -> dict[str, Any]:
    """A Backup; with ``schedule`` it carries the label Velero's schedule controller sets."""
    metadata: dict[str, Any] = {"name": name, "labels": {SCHEDULE_LABEL: schedule} if schedule else {}}
    if created is not None:
        metadata["creationTimestamp"] = rfc3339(created)
    status: dict[str, Any] = {}
    if phase is not None:
        status["phase"] = phase
    if started is not None:
        status["startTimestamp"] = rfc3339(started)
    if completed is not None:
        status["completionTimestamp"] = rfc3339(completed)
    if errors:
        status["errors"] = errors
    if warnings:
        status["warnings"] = warnings
    if items is not None or total is not None:
        status["progress"] = {
            key: value
            for key, value in (("itemsBackedUp", items), ("totalItems", total))
            if value is not None
        }
    if failure_reason is not None:
        status["failureReason"] = failure_reason
    if validation_errors:
        status["validationErrors"] = validation_errors
    return {
        "apiVersion": API_VERSION,
        "kind": "Backup",
        "metadata": metadata,
        "spec": {"storageLocation": "default", "ttl": "720h0m0s"}
        | ({"includedNamespaces": namespaces} if namespaces else {}),
        "status": status,
    }


def restore(
    name: str,
    phase: str | None,
    *,
    backup_name: str,
    schedule: str | None = None,
    started: datetime | None = None,
    completed: datetime | None = None,
    errors: int = 0,
    warnings: int = 0,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"backupName": backup_name}
    if schedule is not None:
        spec["scheduleName"] = schedule
    status: dict[str, Any] = {}
    if phase is not None:
        status["phase"] = phase
    if started is not None:
        status["startTimestamp"] = rfc3339(started)
    if completed is not None:
        status["completionTimestamp"] = rfc3339(completed)
    if errors:
        status["errors"] = errors
    if warnings:
        status["warnings"] = warnings
    return {
        "apiVersion": API_VERSION,
        "kind": "Restore",
        "metadata": {"name": name},
        "spec": spec,
        "status": status,
    }


def schedule(
    name: str,
    cron: str,
    *,
    created: datetime | None = None,
    paused: bool = False,
    last_backup: datetime | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if created is not None:
        metadata["creationTimestamp"] = rfc3339(created)
    status: dict[str, Any] = {"phase": "Enabled"}
    if last_backup is not None:
        status["lastBackup"] = rfc3339(last_backup)
    return {
        "apiVersion": API_VERSION,
        "kind": "Schedule",
        "metadata": metadata,
        "spec": {"schedule": cron, "paused": paused, "template": {"includedNamespaces": ["*"]}},
        "status": status,
    }


def location(name: str, phase: str, *, message: str | None = None, default: bool = True) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "lastValidationTime": rfc3339(datetime.now(UTC))}
    if message is not None:
        status["message"] = message
    return {
        "apiVersion": API_VERSION,
        "kind": "BackupStorageLocation",
        "metadata": {"name": name},
        "spec": {"provider": "aws", "default": default, "objectStorage": {"bucket": "backups"}},
        "status": status,
    }
