"""The test API server's object store: objects, one resourceVersion counter, watch history.

Thread-safe: the server's handlers (in the server's thread) and the tests
(seeding and changing objects directly) use it at the same time. Writes
happen under one lock and notify open watches from inside it, so every watch
sees events in resourceVersion order.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from bot.demo.kube.crds import ResourceDef
from bot.demo.kube.selectors import PatchError, Requirement, json_patch, merge_patch, object_matches

Obj = dict[str, Any]

MERGE_PATCH: Final = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"
# What a fresh cluster has.
INITIAL_NAMESPACES: Final = ("default", "kube-system", "kube-public")


class StatusError(Exception):
    """An error answer, with the ``Status`` body the real API server would send."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def body(self) -> Obj:
        status: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status


def not_found(rdef: ResourceDef, name: str) -> StatusError:
    return StatusError(
        404,
        "NotFound",
        f'{rdef.resource} "{name}" not found',
        {"name": name, "group": rdef.group, "kind": rdef.plural},
    )


@dataclass(frozen=True)
class WatchEvent:
    resource_version: int
    type: str  # ADDED, MODIFIED, DELETED
    key: tuple[str, str]  # (group, plural)
    obj: Obj
    # The object before a MODIFIED: a watch with a selector turns a change
    # into ADDED or DELETED when the object starts or stops matching.
    previous: Obj | None = None

    def for_watcher(
        self, namespace: str | None, labels: list[Requirement], fields: list[Requirement]
    ) -> Obj | None:
        """The event as this watcher sees it, or None if it does not concern it."""
        if namespace and (self.obj.get("metadata") or {}).get("namespace") != namespace:
            return None
        now = object_matches(self.obj, labels, fields)
        before = self.previous is not None and object_matches(self.previous, labels, fields)
        kind = self.type
        if kind == "MODIFIED":
            if now and not before:
                kind = "ADDED"
            elif before and not now:
                kind = "DELETED"
            elif not now:
                return None
        elif not now:
            return None
        return {"type": kind, "object": self.obj}


# Sentinels pushed into a subscription's queue.
CLOSE: Final = "close"
EXPIRE: Final = "expire"


@dataclass(eq=False)
class Subscription:
    key: tuple[str, str]
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[WatchEvent | str] = field(default_factory=asyncio.Queue)

    def push(self, item: WatchEvent | str) -> None:
        # RuntimeError: the server's loop is closed, nobody is watching any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class ObjectStore:
    """Objects by resource type, with a global resourceVersion counter and a watch history."""

    def __init__(self, definitions: Iterable[ResourceDef]) -> None:
        self._lock = threading.RLock()
        self._definitions: dict[tuple[str, str], ResourceDef] = {d.key: d for d in definitions}
        self._objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self._history: list[WatchEvent] = []
        self._rv = 0
        self._compacted = 0
        self._subscriptions: list[Subscription] = []
        for name in INITIAL_NAMESPACES:
            self.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # --- resource types ----------------------------------------------------

    def definitions(self) -> list[ResourceDef]:
        with self._lock:
            return list(self._definitions.values())

    def definition(self, group: str, plural: str) -> ResourceDef | None:
        with self._lock:
            return self._definitions.get((group, plural))

    def register(self, rdef: ResourceDef) -> None:
        with self._lock:
            self._definitions[rdef.key] = rdef

    def unregister(self, group: str, plural: str) -> None:
        """Remove a resource type (a CRD uninstalled): its URLs answer 404, its objects go."""
        with self._lock:
            self._definitions.pop((group, plural), None)
            self._objects.pop((group, plural), None)

    def definition_for(self, api_version: str, kind: str) -> ResourceDef:
        group = api_version.rpartition("/")[0]
        with self._lock:
            for rdef in self._definitions.values():
                if rdef.group == group and rdef.kind == kind:
                    return rdef
        raise KeyError(f"no resource type for {api_version} {kind}")

    # --- reads -----------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def get(self, rdef: ResourceDef, namespace: str | None, name: str) -> Obj:
        with self._lock:
            found = self._objects.get(rdef.key, {}).get((namespace or "", name))
            if found is None:
                raise not_found(rdef, name)
            return copy.deepcopy(found)

    def list_objects(
        self,
        rdef: ResourceDef,
        namespace: str | None,
        labels: list[Requirement] | None = None,
        fields: list[Requirement] | None = None,
    ) -> tuple[list[Obj], int]:
        """Matching objects in (namespace, name) order, and the current resourceVersion."""
        with self._lock:
            found = [
                copy.deepcopy(obj)
                for (ns, _), obj in sorted(self._objects.get(rdef.key, {}).items())
                if (not namespace or ns == namespace) and object_matches(obj, labels or [], fields or [])
            ]
            return found, self._rv

    def objects(self, group: str, plural: str) -> list[Obj]:
        """Every object of a type, for assertions."""
        with self._lock:
            return [copy.deepcopy(obj) for _, obj in sorted(self._objects.get((group, plural), {}).items())]

    def find(self, group: str, plural: str, name: str, namespace: str | None = None) -> Obj | None:
        with self._lock:
            found = self._objects.get((group, plural), {}).get((namespace or "", name))
            return copy.deepcopy(found) if found is not None else None

    # --- writes --------------------------------------------------------------

    def create(self, rdef: ResourceDef, namespace: str | None, body: Obj, version: str | None = None) -> Obj:
        metadata = body.setdefault("metadata", {})
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = f"{metadata['generateName']}{uuid.uuid4().hex[:5]}"
        name = metadata.get("name")
        if not name:
            raise StatusError(
                422, "Invalid", f"{rdef.kind} is invalid: metadata.name: Required value: name is required"
            )
        if namespace and metadata.get("namespace") not in (None, namespace):
            raise StatusError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        with self._lock:
            if (
                rdef.namespaced
                and namespace
                and ("", namespace) not in self._objects.get(("", "namespaces"), {})
            ):
                raise StatusError(
                    404,
                    "NotFound",
                    f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"},
                )
            if (namespace or "", name) in self._objects.get(rdef.key, {}):
                raise StatusError(
                    409,
                    "AlreadyExists",
                    f'{rdef.resource} "{name}" already exists',
                    {"name": name, "group": rdef.group, "kind": rdef.plural},
                )
            return self._write(rdef, namespace, body, None, version)

    def replace(
        self, rdef: ResourceDef, namespace: str | None, name: str, body: Obj, version: str | None = None
    ) -> Obj:
        metadata = body.setdefault("metadata", {})
        if metadata.get("name", name) != name:
            raise StatusError(
                400,
                "BadRequest",
                f"the name of the object ({metadata.get('name')}) "
                f"does not match the name on the URL ({name})",
            )
        with self._lock:
            current = self.get(rdef, namespace, name)
            wanted = metadata.get("resourceVersion")
            if wanted is None and not rdef.builtin:
                raise StatusError(
                    422,
                    "Invalid",
                    f'{rdef.kind}.{rdef.group} "{name}" is invalid: metadata.resourceVersion: '
                    "Invalid value: 0x0: must be specified for an update",
                )
            self._check_version(rdef, name, current, wanted)
            return self._write(rdef, namespace, body, current, version)

    def patch(
        self,
        rdef: ResourceDef,
        namespace: str | None,
        name: str,
        patch: Any,
        content_type: str,
        version: str | None = None,
    ) -> Obj:
        with self._lock:
            current = self.get(rdef, namespace, name)
            if content_type == JSON_PATCH:
                if not isinstance(patch, list):
                    raise StatusError(400, "BadRequest", "a JSON patch must be a list of operations")
                try:
                    patched = json_patch(current, patch)
                except PatchError as error:
                    raise StatusError(422, "Invalid", str(error)) from None
            elif content_type == MERGE_PATCH or (content_type == STRATEGIC_MERGE_PATCH and rdef.builtin):
                # Strategic merge on built-ins is approximated by a merge patch
                # (list merge keys are not honoured); see docs/kubernetes.md.
                if not isinstance(patch, dict):
                    raise StatusError(400, "BadRequest", "a merge patch must be a JSON object")
                wanted = (patch.get("metadata") or {}).get("resourceVersion")
                self._check_version(rdef, name, current, wanted)
                patched = merge_patch(current, patch)
            else:
                raise StatusError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types include: "
                    f"application/json-patch+json, application/merge-patch+json"
                    f"{', application/strategic-merge-patch+json' if rdef.builtin else ''}",
                )
            return self._write(rdef, namespace, patched, current, version)

    def delete(self, rdef: ResourceDef, namespace: str | None, name: str) -> Obj:
        with self._lock:
            current = self.get(rdef, namespace, name)
            del self._objects[rdef.key][(namespace or "", name)]
            self._rv += 1
            current["metadata"]["resourceVersion"] = str(self._rv)
            self._record(WatchEvent(self._rv, "DELETED", rdef.key, current))
            return copy.deepcopy(current)

    def put(self, obj: Obj, *, namespace: str | None = None) -> Obj:
        """Seed or overwrite an object directly (no checks): what a controller would write.

        The type comes from apiVersion/kind; a missing namespace is created.
        """
        rdef = self.definition_for(obj["apiVersion"], obj["kind"])
        body = _jsonable(copy.deepcopy(obj))
        metadata = body.setdefault("metadata", {})
        namespace = (namespace or metadata.get("namespace") or "default") if rdef.namespaced else None
        with self._lock:
            if namespace and ("", namespace) not in self._objects.get(("", "namespaces"), {}):
                self.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            current = self._objects.get(rdef.key, {}).get((namespace or "", metadata["name"]))
            return self._write(rdef, namespace, body, copy.deepcopy(current) if current else None, None)

    def load_yaml(self, path: Path, *, namespace: str | None = None) -> list[Obj]:
        """``put`` every object of a (multi-document) YAML file, e.g. an upstream fixture."""
        with path.open(encoding="utf-8") as handle:
            documents = [doc for doc in yaml.safe_load_all(handle) if doc]
        return [self.put(doc, namespace=namespace) for doc in documents]

    # --- watch support -----------------------------------------------------

    def compact(self) -> int:
        """Forget the history up to now: watches from an older resourceVersion get 410 Gone."""
        with self._lock:
            self._compacted = self._rv
            self._history.clear()
            return self._rv

    def subscribe(
        self, rdef: ResourceDef, resource_version: str | None, loop: asyncio.AbstractEventLoop
    ) -> tuple[list[WatchEvent], Subscription]:
        """The events after ``resource_version`` so far, and a subscription for the next ones.

        No resourceVersion (or "0"): synthetic ADDED events for the current
        objects first, as the real server does.
        """
        with self._lock:
            subscription = Subscription(rdef.key, loop)
            if not resource_version or resource_version == "0":
                backlog = [
                    WatchEvent(int(obj["metadata"]["resourceVersion"]), "ADDED", rdef.key, copy.deepcopy(obj))
                    for obj in sorted(
                        self._objects.get(rdef.key, {}).values(),
                        key=lambda o: int(o["metadata"]["resourceVersion"]),
                    )
                ]
            else:
                try:
                    since = int(resource_version)
                except ValueError:
                    raise StatusError(
                        400, "BadRequest", f"invalid resource version {resource_version!r}"
                    ) from None
                if since < self._compacted:
                    raise StatusError(
                        410, "Expired", f"too old resource version: {since} ({self._compacted})"
                    )
                backlog = [e for e in self._history if e.key == rdef.key and e.resource_version > since]
            self._subscriptions.append(subscription)
            return backlog, subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    def end_watches(self, how: str) -> int:
        """Push CLOSE or EXPIRE to every open watch; returns how many there were."""
        with self._lock:
            for subscription in self._subscriptions:
                subscription.push(how)
            return len(self._subscriptions)

    @property
    def open_watches(self) -> int:
        with self._lock:
            return len(self._subscriptions)

    # --- internals -----------------------------------------------------------

    def _check_version(self, rdef: ResourceDef, name: str, current: Obj, wanted: Any) -> None:
        if wanted is not None and str(wanted) != current["metadata"]["resourceVersion"]:
            raise StatusError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rdef.resource} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                {"name": name, "group": rdef.group, "kind": rdef.plural},
            )

    def _write(
        self, rdef: ResourceDef, namespace: str | None, body: Obj, current: Obj | None, version: str | None
    ) -> Obj:
        """Store ``body`` as the new state (caller holds the lock); server-owned fields are ours."""
        obj = copy.deepcopy(body)
        metadata = obj.setdefault("metadata", {})
        obj["apiVersion"] = rdef.api_version(version if version in rdef.versions else None)
        obj["kind"] = rdef.kind
        if namespace:
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        self._rv += 1
        metadata["resourceVersion"] = str(self._rv)
        if current is None:
            metadata.setdefault("uid", str(uuid.uuid4()))
            metadata.setdefault("creationTimestamp", _now())
            if _tracks_generation(rdef):
                metadata.setdefault("generation", 1)
        else:
            old = current["metadata"]
            for kept in ("uid", "creationTimestamp", "name"):
                metadata[kept] = old[kept]
            generation = int(old.get("generation", 1 if _tracks_generation(rdef) else 0))
            # Without a status subresource (none of the fixtures' CRDs has one)
            # any change outside metadata is a new generation; built-ins count spec only.
            ignored = {"metadata", "status"} if rdef.builtin else {"metadata"}
            changed = {k: v for k, v in obj.items() if k not in ignored} != {
                k: v for k, v in current.items() if k not in ignored
            }
            if generation:
                metadata["generation"] = generation + 1 if changed else generation
        self._objects.setdefault(rdef.key, {})[(namespace or "", metadata["name"])] = obj
        self._record(
            WatchEvent(
                self._rv, "ADDED" if current is None else "MODIFIED", rdef.key, copy.deepcopy(obj), current
            )
        )
        return copy.deepcopy(obj)

    def _record(self, event: WatchEvent) -> None:
        self._history.append(event)
        for subscription in self._subscriptions:
            if subscription.key == event.key:
                subscription.push(event)


def _tracks_generation(rdef: ResourceDef) -> bool:
    # Custom resources and workloads have metadata.generation; ConfigMaps and Namespaces do not.
    return not rdef.builtin or rdef.group in ("apps", "batch")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _jsonable(value: Any) -> Any:
    """YAML fixtures hold unquoted timestamps (datetime objects): make them RFC 3339 strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return stamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
