"""An in-memory stand-in for Argo CD Applications behind ``ArgoApplications``, plus its controller.

It keeps what the approval code relies on from the API server: a global
resourceVersion, JSON merge patch (``None`` deletes), 409 on a stale
resourceVersion in the patch, and the Kubernetes layer's typed errors. It
counts every write that sets an ``operation``, which is what "a sync was
started" means. Faults can be injected per call.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import Mapping
from typing import Any

from bot.kube.errors import ClusterUnreachable, Conflict, NotFound

REV_A = "a" * 40
REV_B = "b" * 40
REV_C = "c" * 40


class Crash(BaseException):
    """The process died: nothing after this point runs (a BaseException, so no handler catches it)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def application(
    name: str = "cilium",
    namespace: str = "argocd",
    *,
    target: str = REV_B,
    current: str | None = REV_A,
    sync: str = "OutOfSync",
    health: str = "Healthy",
    automated: bool = False,
    out_of_sync: int = 2,
    target_branch: str = "main",
) -> dict[str, Any]:
    """An Application shaped like the upstream fixture (argocd/diff-cache.yaml), trimmed."""
    policy: dict[str, Any] = {"syncOptions": ["CreateNamespace=true", "ServerSideApply=true"]}
    if automated:
        policy["automated"] = {"prune": True, "selfHeal": True}
    resources = [
        {
            "group": "apps",
            "kind": "Deployment",
            "namespace": "kube-system",
            "name": f"cilium-{i}",
            "status": "OutOfSync",
            "version": "v1",
            "health": {"status": "Healthy"},
        }
        for i in range(out_of_sync)
    ]
    resources.append({"kind": "Service", "namespace": "kube-system", "name": "hubble", "status": "Synced"})
    status: dict[str, Any] = {
        "health": {"status": health},
        "sync": {"status": sync, "revision": target},
        "resources": resources,
    }
    if current is not None:
        status["history"] = [{"id": 1, "revision": current, "deployedAt": "2024-03-04T22:00:06Z"}]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "project": "default",
            "source": {
                "repoURL": "https://git.example.org/platform.git",
                "path": name,
                "targetRevision": target_branch,
            },
            "destination": {"name": "in-cluster", "namespace": "kube-system"},
            "syncPolicy": policy,
        },
        "status": status,
    }


class FakeArgo:
    """``ArgoApplications`` in memory."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._version = 100
        self.unreachable = False
        # Operations written, by approval id: "a sync was started".
        self.operations: list[dict[str, Any]] = []
        self.patches = 0
        # Seconds each call takes: lets a test run something while a start is in flight.
        self.latency = 0.0
        # One-shot faults for the next patch.
        self.conflict_next_patch = False
        self.fail_after_applying_next_patch = False
        # The bot process dying mid-write: raised before or after the write is
        # applied, or while it is still in flight ("held": the API server has
        # it and applies it later, see land_held), on the next write or
        # (crash_every_patch) on every write.
        self.crash_next_patch: str | None = None  # "before" | "after" | "held"
        self.crash_every_patch: str | None = None
        # The next write's answer times out while the write is still in flight.
        self.hold_next_patch = False
        # Writes sent but not applied yet: (namespace, name, patch).
        self.held: list[tuple[str, str, dict[str, Any]]] = []

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        self._version += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self._version)
        self.objects[(meta["namespace"], meta["name"])] = stored
        return stored

    def obj(self, name: str = "cilium", namespace: str = "argocd") -> dict[str, Any]:
        return self.objects[(namespace, name)]

    def edit(self, patch: Mapping[str, Any], name: str = "cilium", namespace: str = "argocd") -> None:
        """A change by someone else (the controller, Git): bumps the resourceVersion."""
        self.put(merge_patch(self.obj(name, namespace), patch))

    def started_for(self, approval_id: str) -> int:
        return sum(
            1
            for op in self.operations
            if {"name": "readybot-approval", "value": approval_id} in op.get("info", [])
        )

    async def get(self, namespace: str, name: str) -> Mapping[str, Any]:
        await asyncio.sleep(self.latency)
        self._check()
        if (namespace, name) not in self.objects:
            raise NotFound(
                f'applications.argoproj.io "{name}" not found in namespace {namespace}', status=404
            )
        return copy.deepcopy(self.objects[(namespace, name)])

    async def list(self, namespace: str) -> list[Mapping[str, Any]]:
        await asyncio.sleep(0)
        self._check()
        return [copy.deepcopy(o) for (ns, _), o in sorted(self.objects.items()) if ns == namespace]

    async def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        await asyncio.sleep(self.latency)
        self._check()
        self.patches += 1
        crash = self.crash_next_patch or self.crash_every_patch
        if crash == "held" or self.hold_next_patch:
            self.crash_next_patch = None
            held, self.hold_next_patch = self.hold_next_patch, False
            self.held.append((namespace, name, copy.deepcopy(dict(patch))))
            if held:
                raise ClusterUnreachable("no answer within 10 s")
            raise Crash("the bot died while the API server held its write")
        return self._apply(namespace, name, patch, crash)

    def land_held(self) -> list[bool]:
        """The API server gets to the writes it held: each applied, or refused (409) if stale."""
        landed = []
        for namespace, name, patch in self.held:
            try:
                self._apply(namespace, name, patch, None, landing=True)
            except (Conflict, NotFound):
                landed.append(False)
            else:
                landed.append(True)
        self.held.clear()
        return landed

    def _apply(
        self, namespace: str, name: str, patch: Mapping[str, Any], crash: str | None, *, landing: bool = False
    ) -> Mapping[str, Any]:
        """Apply one write; a held one ``landing`` late meets no injected fault, only its resourceVersion."""
        current = self.objects.get((namespace, name))
        if current is None:
            raise NotFound(f'applications.argoproj.io "{name}" not found', status=404)
        wanted = patch.get("metadata", {}).get("resourceVersion")
        injected = self.conflict_next_patch and not landing
        if injected or (wanted and wanted != current["metadata"]["resourceVersion"]):
            self.conflict_next_patch = self.conflict_next_patch and landing
            raise Conflict("conflict: the object changed", status=409)
        if not landing:
            self.crash_next_patch = None
        if crash == "before":
            raise Crash("the bot died before the write reached the API server")
        body = copy.deepcopy(dict(patch))
        body.get("metadata", {}).pop("resourceVersion", None)
        stored = self.put(merge_patch(current, body))
        if patch.get("operation"):
            self.operations.append(copy.deepcopy(dict(patch["operation"])))
        if crash == "after":
            raise Crash("the bot died before it heard the answer")
        if self.fail_after_applying_next_patch and not landing:
            self.fail_after_applying_next_patch = False
            raise ClusterUnreachable("no answer within 10 s")
        return copy.deepcopy(stored)

    def _check(self) -> None:
        if self.unreachable:
            raise ClusterUnreachable("connection refused")

    # -- playing the Argo CD application controller ------------------------------

    def controller_picks_up(self, name: str = "cilium", namespace: str = "argocd") -> None:
        """Running: the operation is copied into status.operationState, with a start time of its own."""
        obj = self.obj(name, namespace)
        # Every operation starts at another second, as on a real controller.
        started = dt.datetime(2024, 3, 5, 7, 33, tzinfo=dt.UTC) + dt.timedelta(seconds=self._version)
        state = {
            "operation": obj["operation"],
            "phase": "Running",
            "startedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "message": "one or more tasks are running",
        }
        self.edit({"status": {"operationState": state}}, name, namespace)

    def controller_finishes(
        self,
        phase: str = "Succeeded",
        *,
        revision: str | None = None,
        message: str = "successfully synced (all tasks run)",
        resources: list[dict[str, Any]] | None = None,
        sync: str = "Synced",
        health: str = "Healthy",
        name: str = "cilium",
        namespace: str = "argocd",
    ) -> None:
        """The operation ends; .operation is cleared and the app is compared again."""
        obj = self.obj(name, namespace)
        state = copy.deepcopy(obj["status"]["operationState"])
        synced = revision or state["operation"]["sync"]["revision"]
        state |= {
            "phase": phase,
            "message": message,
            "finishedAt": "2024-03-05T07:33:04Z",
            "syncResult": {"revision": synced, "resources": resources or []},
        }
        status: dict[str, Any] = {"operationState": state}
        if phase == "Succeeded":
            history = [*obj["status"].get("history", []), {"id": 2, "revision": synced}]
            status |= {
                "history": history,
                "sync": {"status": sync, "revision": synced},
                "health": {"status": health},
            }
        self.edit({"operation": None, "status": status}, name, namespace)
