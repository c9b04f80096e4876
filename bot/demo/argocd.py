"""A stand-in for Argo CD's application controller, on the Kubernetes API stand-in's store.

Argo CD runs a sync when an Application's top-level ``operation`` is set: it
reports ``status.operationState`` Running, then Succeeded with the synced
revision in ``syncResult``, clears ``.operation``, and the app becomes Synced
and Healthy (FACTS.md, "Argo CD"). ``ApplicationController`` makes those
writes; the tests call its steps when they choose, the demo runs ``serve``,
which carries out every operation a few seconds after it appears. Nothing
is deployed: the operation message says it was simulated.
"""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from typing import Any, Final

from bot.demo.kube.selectors import merge_patch
from bot.demo.kube.store import ObjectStore

GROUP: Final = "argoproj.io"
PLURAL: Final = "applications"
SUCCEEDED_MESSAGE: Final = "successfully synced (all tasks run)"

Obj = dict[str, Any]


class ApplicationController:
    """Plays the Argo CD application controller for the Applications of one namespace."""

    def __init__(self, store: ObjectStore, namespace: str) -> None:
        self.store = store
        self.namespace = namespace

    def put(self, obj: Obj) -> None:
        self.store.put(copy.deepcopy(obj) | {"metadata": obj["metadata"] | {"namespace": self.namespace}})

    def app(self, name: str = "cilium") -> Obj:
        found = self.store.find(GROUP, PLURAL, name, self.namespace)
        if found is None:
            raise LookupError(f"no Application {self.namespace}/{name}")
        return found

    def edit(self, patch: Obj, name: str = "cilium") -> None:
        self.store.put(merge_patch(self.app(name), patch))

    def start_running(self, name: str = "cilium") -> None:
        """The controller picked the operation up: phase Running."""
        operation = self.app(name)["operation"]
        self.edit(
            {
                "status": {
                    "operationState": {
                        "operation": operation,
                        "phase": "Running",
                        "startedAt": _now(),
                        "message": "syncing",
                    }
                }
            },
            name,
        )

    def run_to_success(self, name: str = "cilium", *, message: str = SUCCEEDED_MESSAGE) -> None:
        """Running, then Succeeded at the operation's revision; .operation cleared; Synced, Healthy."""
        self.start_running(name)
        self.succeed(name, message=message)

    def succeed(self, name: str = "cilium", *, message: str = SUCCEEDED_MESSAGE) -> None:
        """The running operation Succeeded at its revision; .operation cleared; Synced, Healthy."""
        app = self.app(name)
        if not app.get("operation"):
            return
        operation = app["operation"]
        revision = operation["sync"]["revision"]
        state = {
            "operation": operation,
            "phase": "Succeeded",
            "message": message,
            "startedAt": app["status"]["operationState"].get("startedAt", _now()),
            "finishedAt": _now(),
            "syncResult": {"revision": revision, "resources": []},
        }
        history = list(app["status"].get("history", []))
        history.append({"id": len(history) + 1, "revision": revision, "deployedAt": _now()})
        status = {
            "operationState": state,
            "history": history,
            "sync": {"status": "Synced", "revision": revision},
            "health": {"status": "Healthy"},
            "resources": [],
        }
        self.edit({"operation": None, "status": status}, name)

    def pending_operations(self) -> list[str]:
        """Names of the Applications with an operation not picked up yet."""
        return [
            obj["metadata"]["name"]
            for obj in self.store.objects(GROUP, PLURAL)
            if obj["metadata"].get("namespace") == self.namespace
            and obj.get("operation")
            and (obj.get("status") or {}).get("operationState", {}).get("phase") != "Running"
        ]

    async def serve(self, stop: asyncio.Event, *, run_for_s: float = 4.0, poll_s: float = 0.5) -> None:
        """Until ``stop``: every new operation Running at once, Succeeded ``run_for_s`` later."""
        running: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            for name in self.pending_operations():
                self.start_running(name)
                task = asyncio.create_task(self._finish_later(name, run_for_s), name=f"argocd-{name}")
                running.add(task)
                task.add_done_callback(running.discard)
            try:
                await asyncio.wait_for(stop.wait(), poll_s)
            except TimeoutError:
                continue
        for task in list(running):
            task.cancel()

    async def _finish_later(self, name: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        message = "simulated by the readybot demo's Argo CD stand-in: nothing was deployed"
        self.succeed(name, message=message)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
