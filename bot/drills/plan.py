"""Restore drills, the pure parts: which backup, which namespaces, the Restore to write, the verdict.

Nothing here does I/O. ``bot.drills.service`` reads the cluster, asks these
functions, and writes what they return. The rules that keep a drill inside its
scratch namespaces live here, where they are tested without a cluster:

- every scratch namespace is named ``<prefix>-<drill id>-<namespace>`` and is
  created by the bot with the label ``readybot.io/restore-drill=<drill id>``;
- the Restore maps each restored namespace to its scratch namespace
  (``namespaceMapping``), restores no cluster-scoped resources, and is named
  after the drill, so writing it twice can only find the first one;
- only a namespace with the drill's label *and* name is ever deleted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from bot.velero.model import SCHEDULE_LABEL, Phase, parse_time

DRILL_LABEL: Final = "readybot.io/restore-drill"
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "readybot"}
# A namespace name is a DNS label.
_NAME_MAX: Final = 63
_WILDCARDS: Final = frozenset("*?[]!")


class DrillRefused(Exception):
    """The drill cannot be planned; the message says why, safe to show in the room."""


class Verdict(StrEnum):
    PASSED = "passed"
    PARTIAL = "partial"
    FAILED = "failed"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class BackupFacts:
    """What a drill needs to know of a Backup."""

    name: str
    uid: str
    phase: str
    schedule: str | None
    created: datetime | None
    completed: datetime | None
    items: int | None
    # spec.includedNamespaces; empty: every namespace.
    included_namespaces: tuple[str, ...]


def backup_facts(obj: Mapping[str, Any]) -> BackupFacts:
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    progress = status.get("progress") or {}
    items = progress.get("itemsBackedUp")
    included = spec.get("includedNamespaces") or []
    labels = metadata.get("labels") or {}
    return BackupFacts(
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
        phase=str(status.get("phase") or ""),
        schedule=str(labels[SCHEDULE_LABEL]) if labels.get(SCHEDULE_LABEL) else None,
        created=parse_time(metadata.get("creationTimestamp")),
        completed=parse_time(status.get("completionTimestamp")),
        items=items if isinstance(items, int) and not isinstance(items, bool) and items >= 0 else None,
        included_namespaces=tuple(str(n) for n in included if isinstance(n, str)),
    )


def pick_backup(backups: Iterable[BackupFacts], target: str | None) -> BackupFacts:
    """The backup a drill restores: a schedule's newest Completed one, a named one, or the newest of all.

    ``target`` is a schedule name first (the names people know), else a
    backup name. A named backup may have PartiallyFailed (it can still be
    restored, and the drill shows what that yields); a schedule's is its
    newest Completed one.
    """
    every = list(backups)
    if target is not None:
        of_schedule = [b for b in every if b.schedule == target]
        if of_schedule:
            return _newest_completed(of_schedule, f"schedule {target}")
        named = next((b for b in every if b.name == target), None)
        if named is None:
            raise DrillRefused(f"no Velero schedule or backup named {target[:64]}")
        if named.phase not in (Phase.COMPLETED, Phase.PARTIALLY_FAILED):
            raise DrillRefused(f"backup {named.name} is {named.phase or 'not finished'}: nothing to restore")
        return named
    return _newest_completed(every, "the namespace")


def _newest_completed(backups: Sequence[BackupFacts], where: str) -> BackupFacts:
    done = [b for b in backups if b.phase == Phase.COMPLETED]
    if not done:
        raise DrillRefused(f"no Completed backup of {where} to restore")
    return max(done, key=lambda b: (_moment(b), b.name))


def _moment(backup: BackupFacts) -> float:
    moment = backup.completed or backup.created
    return moment.timestamp() if moment is not None else 0.0


def drill_namespaces(backup: BackupFacts, configured: Sequence[str]) -> list[str]:
    """What to restore: the backup's namespaces (narrowed to ``configured`` if set), else ``configured``."""
    named = [n for n in backup.included_namespaces if not (_WILDCARDS & set(n))]
    every = not backup.included_namespaces or len(named) != len(backup.included_namespaces)
    if every:
        if not configured:
            raise DrillRefused(
                f"backup {backup.name} does not name its namespaces (it backed up "
                f"{', '.join(backup.included_namespaces) or 'every namespace'}): "
                "set velero.drills.namespaces to say which to restore"
            )
        return sorted(set(configured))
    chosen = sorted(set(named) & set(configured)) if configured else sorted(set(named))
    if not chosen:
        raise DrillRefused(
            f"backup {backup.name} holds none of velero.drills.namespaces ({', '.join(configured)})"
        )
    return chosen


def scratch_namespace(prefix: str, drill_id: str, namespace: str) -> str:
    """``<prefix>-<id>-<namespace>``, shortened with a hash of the namespace beyond 63 characters."""
    name = f"{prefix}-{drill_id}-{namespace}"
    if len(name) <= _NAME_MAX:
        return name
    digest = hashlib.sha256(namespace.encode()).hexdigest()[:6]
    room = _NAME_MAX - len(prefix) - len(drill_id) - len(digest) - 3
    return f"{prefix}-{drill_id}-{namespace[:room].rstrip('-')}-{digest}"


def namespace_mapping(prefix: str, drill_id: str, namespaces: Iterable[str]) -> dict[str, str]:
    return {ns: scratch_namespace(prefix, drill_id, ns) for ns in namespaces}


def restore_name(prefix: str, drill_id: str) -> str:
    """The Restore's name: fixed by the drill, so a second create can only meet the first."""
    return f"{prefix}-{drill_id}"


def drill_labels(drill_id: str) -> dict[str, str]:
    return {DRILL_LABEL: drill_id, **MANAGED_BY}


def scratch_namespace_object(name: str, drill_id: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": drill_labels(drill_id)},
    }


def plan_restore(
    *,
    drill_id: str,
    prefix: str,
    velero_namespace: str,
    backup: str,
    mapping: Mapping[str, str],
    restore_pvs: bool,
) -> dict[str, Any]:
    """The Restore object a drill writes: the pinned backup, mapped namespaces, nothing cluster-scoped."""
    return {
        "apiVersion": "velero.io/v1",
        "kind": "Restore",
        "metadata": {
            "name": restore_name(prefix, drill_id),
            "namespace": velero_namespace,
            "labels": drill_labels(drill_id),
        },
        "spec": {
            "backupName": backup,
            "includedNamespaces": sorted(mapping),
            "namespaceMapping": dict(sorted(mapping.items())),
            "includeClusterResources": False,
            "restorePVs": restore_pvs,
        },
    }


def is_ours(obj: Mapping[str, Any], drill_id: str) -> bool:
    """The object carries this drill's label (so the bot made it for this drill)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(DRILL_LABEL) == drill_id


def may_delete_namespace(obj: Mapping[str, Any], drill_id: str, mapping: Mapping[str, str]) -> bool:
    """Only a namespace that is one of this drill's scratch namespaces by name *and* carries its label."""
    name = (obj.get("metadata") or {}).get("name")
    return name in set(mapping.values()) and is_ours(obj, drill_id)


# --- what came back ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NamespaceCheck:
    """What one scratch namespace holds after the restore."""

    source: str
    scratch: str
    # Restored objects by kind (of the kinds the drill reads), e.g. {"Deployment": 2, "Pod": 6}.
    kinds: dict[str, int] = field(default_factory=dict)
    pods: int = 0
    pods_ready: int = 0
    pvcs: int = 0
    pvcs_bound: int = 0


def pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in conditions if isinstance(c, dict)
    )


def pvc_bound(pvc: Mapping[str, Any]) -> bool:
    return (pvc.get("status") or {}).get("phase") == "Bound"


@dataclass(frozen=True, slots=True)
class RestoreFacts:
    """The Restore as the drill reads it."""

    phase: str
    items_restored: int | None
    items_total: int | None
    errors: int
    warnings: int
    failure_reason: str | None
    completed: datetime | None


def restore_facts(obj: Mapping[str, Any]) -> RestoreFacts:
    status = obj.get("status") or {}
    progress = status.get("progress") or {}

    def count(value: object) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    reason = status.get("failureReason")
    return RestoreFacts(
        phase=str(status.get("phase") or ""),
        items_restored=count(progress.get("itemsRestored")),
        items_total=count(progress.get("totalItems")),
        errors=count(status.get("errors")) or 0,
        warnings=count(status.get("warnings")) or 0,
        failure_reason=" ".join(reason.split())[:300] if isinstance(reason, str) and reason.strip() else None,
        completed=parse_time(status.get("completionTimestamp")),
    )


FAILED_PHASES: Final = frozenset({Phase.FAILED, Phase.FAILED_VALIDATION})
ENDED_PHASES: Final = frozenset({Phase.COMPLETED, Phase.PARTIALLY_FAILED, *FAILED_PHASES})


def pods_settled(checks: Sequence[NamespaceCheck]) -> bool:
    return all(c.pods_ready >= c.pods for c in checks)


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    # "412/412 items, 6/6 pods ready in 48s, 3 PVCs bound"
    evidence: str
    problems: tuple[str, ...]


def judge(
    restore: RestoreFacts,
    backup_items: int | None,
    checks: Sequence[NamespaceCheck],
    *,
    pods_waited_s: float | None,
    pods_checked: bool,
) -> Judgement:
    """Passed, partial or failed, from Velero's phase, the item counts, the pods and the PVCs.

    Expected items are the Restore's own total when Velero reports it (what
    this restore set out to bring back), else the backup's ``itemsBackedUp``.
    ``pods_waited_s`` is how long the pods took to become Ready after the
    restore ended (None: not all of them did in time).
    """
    problems: list[str] = []
    expected = restore.items_total if restore.items_total is not None else backup_items
    restored = restore.items_restored or 0
    if expected is None:
        items = f"{restored} items"
    else:
        items = f"{restored}/{expected} items"
        if restored < expected:
            missing = expected - restored
            items += f" ({missing} missing)"
            problems.append(f"{missing} of {expected} items were not restored")
    parts = [items]
    pods = sum(c.pods for c in checks)
    ready = sum(c.pods_ready for c in checks)
    if pods == 0:
        parts.append("no pods")
    elif not pods_checked:
        parts.append(f"{pods} pods (readiness not checked)")
    elif pods_waited_s is not None and ready >= pods:
        parts.append(f"{ready}/{pods} pods ready in {_seconds(pods_waited_s)}")
    else:
        parts.append(f"{ready}/{pods} pods ready")
        problems.append(f"{pods - ready} of {pods} pods did not become Ready in time")
    pvcs = sum(c.pvcs for c in checks)
    bound = sum(c.pvcs_bound for c in checks)
    if pvcs:
        parts.append(f"{bound} PVCs bound" if bound >= pvcs else f"{bound}/{pvcs} PVCs bound")
        if bound < pvcs:
            problems.append(f"{pvcs - bound} of {pvcs} PVCs are not Bound")
    if restore.errors:
        problems.append(f"Velero counted {restore.errors} error{'s' if restore.errors != 1 else ''}")
    if restore.phase in FAILED_PHASES:
        reason = f": {restore.failure_reason}" if restore.failure_reason else ""
        problems.insert(0, f"Velero ended the restore {restore.phase}{reason}")
        return Judgement(Verdict.FAILED, ", ".join(parts), tuple(problems))
    if restore.phase == Phase.PARTIALLY_FAILED:
        problems.insert(0, "Velero ended the restore PartiallyFailed")
    verdict = Verdict.PASSED if not problems else Verdict.PARTIAL
    return Judgement(verdict, ", ".join(parts), tuple(problems))


def headline(verdict: Verdict, backup: str, evidence: str, message: str = "") -> str:
    """The report's first line, also the prompt's last headline."""
    if verdict is Verdict.PASSED:
        return f"✅ drill of {backup} passed: {evidence}"
    if verdict is Verdict.PARTIAL:
        return f"⚠️ drill of {backup} partially passed: {evidence}"
    if verdict is Verdict.FAILED:
        if message and evidence:
            return f"❌ drill of {backup} failed: {message} ({evidence})"
        return f"❌ drill of {backup} failed: {message or evidence}"
    return f"💥 drill of {backup} ended in an error: {message or evidence}"


def where_to_look(velero_namespace: str, name: str) -> str:
    flag = "" if velero_namespace == "velero" else f" -n {velero_namespace}"
    return f"`velero{flag} restore describe {name} --details`, `velero{flag} restore logs {name}`"


def _seconds(value: float) -> str:
    whole = round(value)
    if whole < 120:
        return f"{whole}s"
    minutes, seconds = divmod(whole, 60)
    return f"{minutes}m{seconds:02d}s" if seconds else f"{minutes}m"
