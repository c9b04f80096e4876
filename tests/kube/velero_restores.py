"""The test plays Velero for a drill's Restore: its phases and progress, and the objects it restores.

Written into the test API server's store directly, as Velero's restore
controller would write through its own ServiceAccount (so none of these
writes counts as the bot's in the RBAC comparison).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from tests.kube.store import ObjectStore
from tests.kube.velero_objects import rfc3339

GROUP = "velero.io"
RESTORES = "restores"


def restores(store: ObjectStore) -> list[dict[str, Any]]:
    return store.objects(GROUP, RESTORES)


async def wait_for_restore(store: ObjectStore) -> dict[str, Any]:
    """The first Restore written to the cluster (by the bot); bound by the caller's ``asyncio.timeout``."""
    while not (found := restores(store)):
        await asyncio.sleep(0.05)
    return found[0]


def progress(
    store: ObjectStore,
    restore: dict[str, Any],
    phase: str,
    *,
    restored: int | None = None,
    total: int | None = None,
    errors: int = 0,
    warnings: int = 0,
    failure_reason: str | None = None,
) -> dict[str, Any]:
    """Velero moves the Restore on: New → InProgress → Completed / PartiallyFailed / Failed."""
    current = store.find(GROUP, RESTORES, restore["metadata"]["name"], restore["metadata"]["namespace"])
    assert current is not None
    now = rfc3339(datetime.now(UTC))
    status: dict[str, Any] = dict(current.get("status") or {})
    status["phase"] = phase
    status.setdefault("startTimestamp", now)
    if restored is not None or total is not None:
        status["progress"] = {
            key: value
            for key, value in (("itemsRestored", restored), ("totalItems", total))
            if value is not None
        }
    if errors:
        status["errors"] = errors
    if warnings:
        status["warnings"] = warnings
    if failure_reason is not None:
        status["failureReason"] = failure_reason
    if phase in ("Completed", "PartiallyFailed", "Failed", "FailedValidation"):
        status["completionTimestamp"] = now
    current["status"] = status
    return store.put(current)


def restored_objects(
    store: ObjectStore,
    namespace: str,
    *,
    deployments: int = 0,
    pods: int = 0,
    ready: int = 0,
    pvcs: int = 0,
    bound: int = 0,
) -> None:
    """What Velero restores into a scratch namespace (and the kubelet / volume binder do next)."""
    labels = {"velero.io/restore-name": "drill"}
    for index in range(deployments):
        store.put(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"web-{index}", "namespace": namespace, "labels": labels},
                "spec": {"replicas": 1},
            }
        )
    for index in range(pods):
        condition = {"type": "Ready", "status": "True" if index < ready else "False"}
        store.put(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"web-{index}", "namespace": namespace, "labels": labels},
                "status": {"phase": "Running", "conditions": [condition]},
            }
        )
    for index in range(pvcs):
        store.put(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": f"data-{index}", "namespace": namespace, "labels": labels},
                "status": {"phase": "Bound" if index < bound else "Pending"},
            }
        )
