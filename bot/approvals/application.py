"""An Argo CD Application as the gate sees it: a small typed view, pure functions over it.

Revisions, read from the CRD (argoproj.io/v1alpha1) and a real status:

- ``status.sync.revision`` is the revision Argo CD last compared the live
  state against, i.e. what a sync would apply now: the **target**.
- ``status.history[-1].revision`` is what the last sync deployed: the
  **current** one (``status.operationState.syncResult.revision`` if there is no
  history yet).
- ``spec.source.targetRevision`` is a branch, tag or range, not a commit; it
  is part of the source fingerprint, never the pinned revision.

An operation is in progress while ``.operation`` is set (the controller has
not picked it up yet) or ``status.operationState.phase`` is Running or
Terminating.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# The name of the operation info item carrying the approval id; the
# controller copies it into status.operationState.operation.info.
INFO_APPROVAL = "readybot-approval"
INFO_APPROVED_BY = "readybot-approved-by"

_RUNNING_PHASES = frozenset({"Running", "Terminating"})
_FAILED_RESOURCE_STATUSES = frozenset({"SyncFailed"})
_FAILED_HOOK_PHASES = frozenset({"Failed", "Error"})


@dataclass(frozen=True, slots=True)
class ResourceRef:
    group: str
    kind: str
    namespace: str
    name: str
    status: str = ""
    message: str = ""
    requires_pruning: bool = False

    def label(self) -> str:
        kind = f"{self.group}/{self.kind}" if self.group else self.kind
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{kind} {where}"


@dataclass(frozen=True, slots=True)
class OperationStateView:
    phase: str
    message: str
    info: Mapping[str, str]
    result_revision: str | None
    resources: tuple[ResourceRef, ...]
    hook_failures: tuple[ResourceRef, ...] = ()

    def failed_resources(self) -> list[ResourceRef]:
        failed = [r for r in self.resources if r.status in _FAILED_RESOURCE_STATUSES]
        return failed + list(self.hook_failures)


@dataclass(frozen=True, slots=True)
class AppView:
    namespace: str
    name: str
    resource_version: str
    sync_status: str
    health_status: str
    current_revision: str | None
    target_revision: str | None
    automated: bool
    multi_source: bool
    source_fingerprint: str
    # Info of the pending ``.operation``; None when there is none.
    operation_info: Mapping[str, str] | None
    operation_state: OperationStateView | None
    out_of_sync: tuple[ResourceRef, ...]
    sync_options: tuple[str, ...] = ()
    retry: Mapping[str, Any] | None = field(default=None)
    # Which operation status.operationState describes ("" if none): a new
    # operation run on the app changes it. See ``operation_marker``.
    operation_marker: str = ""

    @property
    def operation_running(self) -> bool:
        if self.operation_info is not None:
            return True
        return self.operation_state is not None and self.operation_state.phase in _RUNNING_PHASES


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _info(items: object) -> dict[str, str]:
    return {_str(i.get("name")): _str(i.get("value")) for i in _list(items) if isinstance(i, Mapping)}


def _resource(item: Mapping[str, Any]) -> ResourceRef:
    return ResourceRef(
        group=_str(item.get("group")),
        kind=_str(item.get("kind")),
        namespace=_str(item.get("namespace")),
        name=_str(item.get("name")),
        status=_str(item.get("status")),
        message=_str(item.get("message")),
        requires_pruning=item.get("requiresPruning") is True,
    )


def _operation_state(raw: Mapping[str, Any]) -> OperationStateView | None:
    if not raw:
        return None
    result = _dict(raw.get("syncResult"))
    items = [i for i in _list(result.get("resources")) if isinstance(i, Mapping)]
    hooks = tuple(
        _resource(i) for i in items if i.get("hookType") and _str(i.get("hookPhase")) in _FAILED_HOOK_PHASES
    )
    return OperationStateView(
        phase=_str(raw.get("phase")),
        message=_str(raw.get("message")),
        info=_info(_dict(raw.get("operation")).get("info")),
        result_revision=_str(result.get("revision")) or None,
        resources=tuple(_resource(i) for i in items if not i.get("hookType")),
        hook_failures=hooks,
    )


def source_fingerprint(spec: Mapping[str, Any]) -> str:
    """A hash of what the app is built from (repo, path, targetRevision, chart, values…).

    If it changes between prompt and approval, what was approved is no longer
    what a sync would apply.
    """
    source = {"source": spec.get("source"), "sources": spec.get("sources")}
    encoded = json.dumps(source, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()[:32]


def operation_marker(raw_state: Mapping[str, Any]) -> str:
    """A short fingerprint of the operation ``status.operationState`` is about; "" when there is none.

    The controller keeps the last operation's state until the next operation
    replaces it, so the marker changes exactly when another operation ran.
    Stored with a request, it tells a recovering bot whether anything ran on
    the app since the prompt (its own operation may have, and been replaced).
    """
    if not raw_state:
        return ""
    identity = {"startedAt": raw_state.get("startedAt"), "operation": raw_state.get("operation")}
    encoded = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()[:16]


def parse_application(obj: Mapping[str, Any]) -> AppView:
    """Read an Application object (as the API returns it) into an ``AppView``.

    Tolerant of missing fields: a freshly created Application has no status.
    """
    metadata = _dict(obj.get("metadata"))
    spec = _dict(obj.get("spec"))
    status = _dict(obj.get("status"))
    sync = _dict(status.get("sync"))
    policy = _dict(spec.get("syncPolicy"))
    automated = policy.get("automated")
    # automated: {enabled: false} switches automated sync off explicitly.
    automated_on = isinstance(automated, Mapping) and automated.get("enabled") is not False
    history = [h for h in _list(status.get("history")) if isinstance(h, Mapping)]
    raw_state = _dict(status.get("operationState"))
    operation_state = _operation_state(raw_state)
    current = _str(history[-1].get("revision")) if history else ""
    if not current and operation_state is not None and operation_state.phase == "Succeeded":
        current = operation_state.result_revision or ""
    operation = obj.get("operation")
    out_of_sync = tuple(
        _resource(i)
        for i in _list(status.get("resources"))
        if isinstance(i, Mapping) and i.get("status") == "OutOfSync"
    )
    retry = policy.get("retry")
    return AppView(
        namespace=_str(metadata.get("namespace")),
        name=_str(metadata.get("name")),
        resource_version=_str(metadata.get("resourceVersion")),
        sync_status=_str(sync.get("status")) or "Unknown",
        health_status=_str(_dict(status.get("health")).get("status")) or "Unknown",
        current_revision=current or None,
        target_revision=_str(sync.get("revision")) or None,
        automated=automated_on,
        multi_source=bool(_list(spec.get("sources"))),
        source_fingerprint=source_fingerprint(spec),
        operation_info=_info(operation.get("info")) if isinstance(operation, Mapping) else None,
        operation_state=operation_state,
        out_of_sync=out_of_sync,
        sync_options=tuple(o for o in _list(policy.get("syncOptions")) if isinstance(o, str)),
        retry=retry if isinstance(retry, Mapping) else None,
        operation_marker=operation_marker(raw_state),
    )


# --- may a sync be requested / started? ------------------------------------


def request_refusal(view: AppView) -> str | None:
    """Why no prompt should be posted for this app now, or None."""
    blocked = _blocking_reason(view)
    if blocked is not None:
        return blocked
    if view.target_revision is None:
        return "Argo CD has not compared it yet (no status.sync.revision); try again in a minute"
    return None


def _blocking_reason(view: AppView) -> str | None:
    if view.automated:
        return (
            "automated sync is enabled (spec.syncPolicy.automated), so Argo CD syncs it without "
            "approval; disable it in Git to gate this app"
        )
    if view.operation_running:
        return "an operation is already running on it; wait until it has finished"
    if view.multi_source:
        return "it has several sources (spec.sources); the gate supports single-source apps only"
    return None


class StartVerdict(StrEnum):
    GO = "go"
    MOVED = "moved"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class StartCheck:
    verdict: StartVerdict
    reason: str = ""


def check_start(view: AppView, pinned_revision: str, fingerprint: str) -> StartCheck:
    """Right before writing the operation: is it still exactly what was approved?"""
    blocked = _blocking_reason(view)
    if blocked is not None:
        return StartCheck(StartVerdict.REFUSED, blocked)
    if view.source_fingerprint != fingerprint:
        return StartCheck(StartVerdict.MOVED, "the app's source (repo, path or targetRevision) changed")
    if view.target_revision != pinned_revision:
        shown = view.target_revision or "unknown"
        return StartCheck(StartVerdict.MOVED, f"the target revision moved to {shown}")
    return StartCheck(StartVerdict.GO)


def merged_sync_options(app_options: Sequence[str], configured: Sequence[str]) -> list[str]:
    """The app's own sync options with the configured ones on top (same name: configured wins)."""
    merged: dict[str, str] = {}
    for option in [*app_options, *configured]:
        merged[option.split("=", 1)[0]] = option
    return list(merged.values())


def build_operation(
    view: AppView,
    *,
    approval_id: str,
    requester: str,
    approvers: Sequence[str],
    revision: str,
    prune: bool,
    sync_options: Sequence[str],
) -> dict[str, Any]:
    """The ``operation`` Argo CD's API server would write for ``argocd app sync --revision``.

    Like the API server, it carries the app's retry policy and sync options
    (plus the configured ones); the revision is the pinned one, never
    anything typed in chat.
    """
    sync: dict[str, Any] = {"revision": revision, "prune": prune}
    options = merged_sync_options(view.sync_options, sync_options)
    if options:
        sync["syncOptions"] = options
    operation: dict[str, Any] = {
        "initiatedBy": {"username": requester, "automated": False},
        "info": [
            {"name": INFO_APPROVAL, "value": approval_id},
            {"name": INFO_APPROVED_BY, "value": ", ".join(approvers)},
        ],
        "sync": sync,
    }
    if view.retry is not None:
        operation["retry"] = dict(view.retry)
    return operation


def operation_patch(resource_version: str, operation: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch setting ``operation`` and clearing a stale ``status.operationState``.

    The resourceVersion makes it conditional: a concurrent change answers 409
    and the caller re-reads and re-checks. The CRD has no status subresource,
    so the status change goes through the same write.
    """
    return {
        "metadata": {"resourceVersion": resource_version},
        "operation": dict(operation),
        "status": {"operationState": None},
    }


# --- following a started sync ---------------------------------------------


class Phase(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ERROR = "error"
    # Neither .operation nor status.operationState carries our id any more.
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class Progress:
    phase: Phase
    message: str = ""
    result_revision: str | None = None
    failed_resources: tuple[ResourceRef, ...] = ()


_PHASES = {"Succeeded": Phase.SUCCEEDED, "Failed": Phase.FAILED, "Error": Phase.ERROR}


def progress(view: AppView, approval_id: str) -> Progress:
    """Where our operation is, correlated by the approval id in its info."""
    state = view.operation_state
    if state is not None and state.info.get(INFO_APPROVAL) == approval_id:
        if state.phase in _RUNNING_PHASES or not state.phase:
            return Progress(Phase.RUNNING, state.message)
        phase = _PHASES.get(state.phase, Phase.ERROR)
        return Progress(phase, state.message, state.result_revision, tuple(state.failed_resources()))
    if view.operation_info is not None and view.operation_info.get(INFO_APPROVAL) == approval_id:
        return Progress(Phase.QUEUED)
    return Progress(Phase.LOST)


def is_ours(view: AppView, approval_id: str) -> bool:
    """Whether our operation reached the Application (for recovery after a crash)."""
    return progress(view, approval_id).phase is not Phase.LOST


def settled(view: AppView, revision: str) -> bool:
    """Synced to the approved revision and Healthy: nothing left to wait for."""
    return (
        view.sync_status == "Synced" and view.target_revision == revision and view.health_status == "Healthy"
    )


# What ``!apps`` shows of an app's ``spec.info`` (Argo CD's "Info" panel: links, contacts, notes).
_INFO_MAX_CHARS = 120


def app_info(obj: Mapping[str, Any]) -> str:
    """The app's ``spec.info`` items as one short line: ``name: value; …``, cut at 120 characters."""
    items = [
        f"{name}: {value}" if name else value
        for name, value in _info(_dict(obj.get("spec")).get("info")).items()
        if value
    ]
    line = "; ".join(items)
    return line if len(line) <= _INFO_MAX_CHARS else line[: _INFO_MAX_CHARS - 1] + "…"
