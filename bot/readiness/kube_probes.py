"""Probes that read the cluster: workloads, objects, fields, counts, coverage, schedules.

A ``NotFound`` of the object looked for is a real negative finding (fail);
every other Kubernetes error (unreachable, forbidden, missing CRD) escapes
as a ``UserError`` and ``probes.run_probe`` makes the criterion unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeGuard

from bot.kube.errors import KubeError, NotFound
from bot.readiness.causes import cause_of, general
from bot.readiness.conditions import describe_all, failing, holds_all, shown_at
from bot.readiness.results import Cause, Mark, ProbeResult, all_of
from config.cron import due_by, parse_cron
from config.durations import format_duration
from config.readiness_plan import (
    CountProbe,
    CountSource,
    CoverageProbe,
    CronJobProbe,
    ExistsProbe,
    FieldProbe,
    Probe,
    ResourceRef,
    ScheduleSpec,
    VeleroSchedulesProbe,
    WorkloadProbe,
)

if TYPE_CHECKING:
    from bot.readiness.probes import ProbeEnv

KubeObject = dict[str, Any]
KubeProbe = (
    WorkloadProbe
    | ExistsProbe
    | FieldProbe
    | CountProbe
    | CoverageProbe
    | CronJobProbe
    | VeleroSchedulesProbe
)
_KINDS = (
    WorkloadProbe,
    ExistsProbe,
    FieldProbe,
    CountProbe,
    CoverageProbe,
    CronJobProbe,
    VeleroSchedulesProbe,
)
# Names listed in evidence before "… and N more".
_MAX_NAMES = 8

_WORKLOAD_PLURALS = {"Deployment": "deployments", "DaemonSet": "daemonsets", "StatefulSet": "statefulsets"}
_VELERO_SCHEDULES = ResourceRef(group="velero.io", version="v1", plural="schedules")
_VELERO_BACKUPS = ResourceRef(group="velero.io", version="v1", plural="backups")
_CRON_JOBS = ResourceRef(group="batch", version="v1", plural="cronjobs")
_NAMESPACES = ResourceRef(group="", version="v1", plural="namespaces")


def handles(probe: Probe) -> TypeGuard[KubeProbe]:
    return isinstance(probe, _KINDS)


async def run(probe: KubeProbe, env: ProbeEnv) -> ProbeResult:  # noqa: PLR0911 - one per kind
    expected = describe(probe)
    if env.kube is None:
        reason = "Kubernetes access is not configured (kubernetes.enabled)"
        return ProbeResult.unknown(reason, expected, [general(reason)])
    if env.kube_unreachable is not None:
        return ProbeResult.unknown(env.kube_unreachable, expected, [general(env.kube_unreachable)])
    if isinstance(probe, WorkloadProbe):
        return await _workload(probe, env, expected)
    if isinstance(probe, ExistsProbe):
        return await _exists(probe, env, expected)
    if isinstance(probe, FieldProbe):
        return await _field(probe, env, expected)
    if isinstance(probe, CountProbe):
        return await _count(probe, env, expected)
    if isinstance(probe, CoverageProbe):
        return await _coverage(probe, env, expected)
    if isinstance(probe, CronJobProbe):
        return await _cronjob(probe, env, expected)
    return await _velero(probe, env, expected)


def describe(probe: KubeProbe) -> str:  # noqa: PLR0911 - one sentence per kind
    if isinstance(probe, WorkloadProbe):
        kinds = " or ".join(probe.workload)
        what = "ready on every node" if probe.workload == ["DaemonSet"] else "all replicas ready"
        return f"{kinds} {probe.namespace}/{probe.name} {what}"
    if isinstance(probe, ExistsProbe):
        return f"{probe.resource.resource} {_where(probe.namespace)}{probe.name} exists"
    if isinstance(probe, FieldProbe):
        names = ", ".join(probe.names)
        return f"{probe.resource.resource} {_where(probe.namespace)}{names}: {describe_all(probe.where)}"
    if isinstance(probe, CountProbe):
        bounds = f"at least {probe.min}" + (f" and at most {probe.max}" if probe.max is not None else "")
        sources = " + ".join(_describe_source(source) for source in probe.sources)
        return f"{bounds} {sources}"
    if isinstance(probe, CoverageProbe):
        noun = probe.noun or probe.resource.resource
        return f"every {_describe_namespaces(probe)} has {_at_least(probe.min_per_namespace)}{noun}" + (
            f" ({describe_all(probe.where)})" if probe.where else ""
        )
    if isinstance(probe, CronJobProbe):
        every = f", runs at least every {format_duration(probe.max_interval)}" if probe.max_interval else ""
        return (
            f"CronJob {probe.namespace}/{probe.name} not suspended{every}, succeeded since its last "
            f"scheduled run (grace {format_duration(probe.grace)})"
        )
    schedules = ", ".join(_schedule_label(spec) for spec in probe.schedules)
    done = " and its newest backup Completed" if probe.require_completed else ""
    return (
        f"Velero schedules in {probe.namespace} ({schedules}): each not paused, backed up since its "
        f"last scheduled run (grace {format_duration(probe.grace)}){done}"
    )


# --- shared reads -------------------------------------------------------------------


async def _list(
    env: ProbeEnv, ref: ResourceRef, namespace: str | None, label_selector: str | None
) -> list[KubeObject]:
    kube = env.kube
    assert kube is not None
    key = ("list", ref.group, ref.version, ref.plural, namespace, label_selector)

    async def fetch() -> list[KubeObject]:
        listing = await kube.list_resource(
            ref.group, ref.version, ref.plural, namespace=namespace, label_selector=label_selector
        )
        return listing.items

    return await env.cache.get(key, fetch)


async def _get(env: ProbeEnv, ref: ResourceRef, namespace: str | None, name: str) -> KubeObject | None:
    """The object, or None when it does not exist (NotFound); other errors escape."""
    kube = env.kube
    assert kube is not None

    async def fetch() -> KubeObject | None:
        try:
            return await kube.get_resource(ref.group, ref.version, ref.plural, name, namespace=namespace)
        except NotFound:
            return None

    return await env.cache.get(("get", ref.group, ref.version, ref.plural, namespace, name), fetch)


# --- kinds ---------------------------------------------------------------------------


async def _workload(probe: WorkloadProbe, env: ProbeEnv, expected: str) -> ProbeResult:
    for kind in probe.workload:
        ref = ResourceRef(group="apps", version="v1", plural=_WORKLOAD_PLURALS[kind])
        obj = await _get(env, ref, probe.namespace, probe.name)
        if obj is None:
            continue
        ready, detail = workload_ready(kind, obj)
        found = f"{kind} {probe.namespace}/{probe.name}: {detail}"
        return ProbeResult(Mark.PASS if ready else Mark.FAIL, found, expected)
    kinds = " or ".join(probe.workload)
    return ProbeResult.failed(f"no {kinds} {probe.name} in namespace {probe.namespace}", expected)


def workload_ready(kind: str, obj: KubeObject) -> tuple[bool, str]:
    """Whether a workload is ready, and its counts in words."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if kind == "DaemonSet":
        desired = int(status.get("desiredNumberScheduled") or 0)
        ready = int(status.get("numberReady") or 0)
        if desired == 0:
            return False, "scheduled on no node"
        return ready >= desired, f"ready on {ready}/{desired} nodes"
    desired = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    ready = int(status.get("readyReplicas") or 0)
    if desired == 0:
        return False, "scaled to 0 replicas"
    return ready >= desired, f"{ready}/{desired} replicas ready"


async def _exists(probe: ExistsProbe, env: ProbeEnv, expected: str) -> ProbeResult:
    obj = await _get(env, probe.resource, probe.namespace, probe.name)
    name = f"{probe.resource.resource} {_where(probe.namespace)}{probe.name}"
    if obj is None:
        return ProbeResult.failed(f"{name} not found", expected)
    return ProbeResult.passed(f"{name} exists", expected)


async def _field(probe: FieldProbe, env: ProbeEnv, expected: str) -> ProbeResult:
    parts: list[ProbeResult] = []
    for name in probe.names:
        obj = await _get(env, probe.resource, probe.namespace, name)
        label = f"{probe.resource.resource} {_where(probe.namespace)}{name}"
        if obj is None:
            parts.append(ProbeResult.failed(f"{label} not found", expected))
            continue
        unmet = failing(obj, probe.where)
        shown = "; ".join(dict.fromkeys(shown_at(obj, condition) for condition in (unmet or probe.where)))
        mark = Mark.FAIL if unmet else Mark.PASS
        parts.append(ProbeResult(mark, f"{name}: {shown}", expected))
    combined = all_of(parts)
    return ProbeResult(combined.mark, combined.found, expected)


async def _count(probe: CountProbe, env: ProbeEnv, expected: str) -> ProbeResult:
    total = 0
    names: list[str] = []
    violators: list[str] = []
    unknown: list[str] = []
    causes: list[Cause] = []
    for source in probe.sources:
        try:
            items = await _list(env, source.resource, source.namespace, source.label_selector)
        except KubeError as error:
            # One missing type (an older Kyverno without ValidatingPolicy) must
            # not hide what the others found.
            unknown.append(str(error))
            causes.append(cause_of(error))
            continue
        matching = [item for item in items if holds_all(item, source.where)]
        total += len(matching)
        names.extend(_qualified(item) for item in matching)
        violators.extend(_qualified(item) for item in matching if not holds_all(item, source.every))
    found = f"{total} found" + (f": {_names(names)}" if names else "")
    if unknown:
        found += "; not checked: " + "; ".join(unknown)
    if violators:
        every = " and ".join(describe_all(source.every) for source in probe.sources if source.every)
        return ProbeResult.failed(f"{found}; not meeting {every}: {_names(violators)}", expected)
    enough = total >= probe.min
    too_many = probe.max is not None and total > probe.max
    if too_many:
        return ProbeResult.failed(found, expected)
    if enough and (not unknown or probe.max is None):
        # A source that could not be read can only add to the count.
        return ProbeResult.passed(found, expected)
    if unknown:
        return ProbeResult.unknown(found, expected, causes)
    return ProbeResult.failed(found, expected)


async def _coverage(probe: CoverageProbe, env: ProbeEnv, expected: str) -> ProbeResult:
    selector = probe.namespaces
    namespaces = await _list(env, _NAMESPACES, None, selector.label_selector)
    present = {_name(item) for item in namespaces}
    selected = sorted(name for name in present if not selector.names or name in selector.names)
    selected = [name for name in selected if name not in selector.exclude]
    absent = [name for name in selector.names if name not in present and name not in selector.exclude]
    if not selected and not absent:
        return ProbeResult.unknown(
            f"no namespace matches {_describe_namespaces(probe)}; nothing to check", expected
        )
    objects = await _list(env, probe.resource, None, None)
    per_namespace: dict[str, int] = {}
    for obj in objects:
        if holds_all(obj, probe.where):
            namespace = str((obj.get("metadata") or {}).get("namespace", ""))
            per_namespace[namespace] = per_namespace.get(namespace, 0) + 1
    missing = [name for name in selected if per_namespace.get(name, 0) < probe.min_per_namespace]
    covered = len(selected) - len(missing)
    found = f"{covered}/{len(selected)} namespaces covered"
    if missing:
        found += f"; missing in: {_names(missing)}"
    if absent:
        found += f"; namespaces not found: {_names(absent)}"
    mark = Mark.FAIL if missing or absent else Mark.PASS
    return ProbeResult(mark, found, expected)


async def _cronjob(probe: CronJobProbe, env: ProbeEnv, expected: str) -> ProbeResult:
    obj = await _get(env, _CRON_JOBS, probe.namespace, probe.name)
    label = f"CronJob {probe.namespace}/{probe.name}"
    if obj is None:
        return ProbeResult.failed(f"{label} not found", expected)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if spec.get("suspend"):
        return ProbeResult.failed(f"{label} is suspended", expected)
    now = datetime.fromtimestamp(env.clock(), UTC)
    try:
        schedule = parse_cron(str(spec.get("schedule", "")), spec.get("timeZone") or "UTC")
    except ValueError as error:
        return ProbeResult.unknown(f"{label}: cannot read its schedule ({error})", expected)
    schedule_text = f"schedule {spec.get('schedule')!r}"
    if probe.max_interval is not None:
        gap = schedule.longest_gap(now)
        if gap is None or gap > probe.max_interval:
            runs = "never runs" if gap is None else f"runs only every {format_duration(gap)}"
            return ProbeResult.failed(f"{label}: {schedule_text} {runs}", expected)
    last = _time(status.get("lastSuccessfulTime"))
    created = _time((obj.get("metadata") or {}).get("creationTimestamp"))
    return _recent(
        label=f"{label} ({schedule_text})",
        last=last,
        last_word="last success",
        created=created,
        due=due_by(schedule, now - probe.grace, last_run=last, created=created),
        expected=expected,
    )


async def _velero(probe: VeleroSchedulesProbe, env: ProbeEnv, expected: str) -> ProbeResult:
    schedules = await _list(env, _VELERO_SCHEDULES, probe.namespace, None)
    backups = await _list(env, _VELERO_BACKUPS, probe.namespace, None) if probe.require_completed else []
    now = datetime.fromtimestamp(env.clock(), UTC)
    parts = [_velero_one(spec, schedules, backups, probe, now, expected) for spec in probe.schedules]
    combined = all_of(parts)
    return ProbeResult(combined.mark, combined.found, expected)


def _velero_one(
    spec: ScheduleSpec,
    schedules: Sequence[KubeObject],
    backups: Sequence[KubeObject],
    probe: VeleroSchedulesProbe,
    now: datetime,
    expected: str,
) -> ProbeResult:
    label = _schedule_label(spec)
    found = next((item for item in schedules if _schedule_matches(spec, item)), None)
    if found is None:
        how = f"named {spec.name}" if spec.name else f"with cron {spec.cron!r}"
        return ProbeResult.failed(f"{label}: no Schedule {how} in {probe.namespace}", expected)
    name = _name(found)
    item_spec, status = found.get("spec") or {}, found.get("status") or {}
    if item_spec.get("paused"):
        return ProbeResult.failed(f"{label}: Schedule {name} is paused", expected)
    try:
        schedule = parse_cron(str(item_spec.get("schedule", "")))
    except ValueError as error:
        return ProbeResult.unknown(f"{label}: cannot read the schedule of {name} ({error})", expected)
    last = _time(status.get("lastBackup"))
    created = _time((found.get("metadata") or {}).get("creationTimestamp"))
    recent = _recent(
        label=f"{label} (Schedule {name})",
        last=last,
        last_word="last backup",
        created=created,
        # "@every 6h" has no fixed times: one interval after the last backup (or the creation) is due.
        due=due_by(schedule, now - probe.grace, last_run=last, created=created),
        expected=expected,
    )
    if recent.mark is not Mark.PASS or not probe.require_completed:
        return recent
    own = [
        item
        for item in backups
        if (item.get("metadata") or {}).get("labels", {}).get("velero.io/schedule-name") == name
    ]
    if not own:
        return ProbeResult.failed(f"{recent.found}; no Backup labelled with this schedule", expected)
    newest = max(own, key=lambda item: str((item.get("metadata") or {}).get("creationTimestamp", "")))
    phase = str((newest.get("status") or {}).get("phase", "New"))
    found_text = f"{recent.found}; newest backup {_name(newest)} {phase}"
    return ProbeResult(Mark.PASS if phase == "Completed" else Mark.FAIL, found_text, expected)


def _recent(
    *,
    label: str,
    last: datetime | None,
    last_word: str,
    created: datetime | None,
    due: datetime | None,
    expected: str,
) -> ProbeResult:
    """Pass when the last run is at or after the run that was due (``due``: the planned time)."""
    if due is None or (created is not None and created > due):
        # Created after its last planned run (or never planned yet): nothing can be judged.
        when = f"; {last_word} {_iso(last)}" if last else ""
        return ProbeResult.unknown(f"{label}: no run was due yet since it was created{when}", expected)
    if last is None:
        return ProbeResult.failed(f"{label}: no {last_word} yet (a run was due {_iso(due)})", expected)
    if last < due:
        return ProbeResult.failed(
            f"{label}: {last_word} {_iso(last)}, but a run was due {_iso(due)}", expected
        )
    return ProbeResult.passed(f"{label}: {last_word} {_iso(last)}", expected)


# --- words ------------------------------------------------------------------------------


def _describe_source(source: CountSource) -> str:
    scope = f" in {source.namespace}" if source.namespace else ""
    label = f" labelled {source.label_selector}" if source.label_selector else ""
    where = f" with {describe_all(source.where)}" if source.where else ""
    every = f", each with {describe_all(source.every)}" if source.every else ""
    return f"{source.resource.resource}{scope}{label}{where}{every}"


def _describe_namespaces(probe: CoverageProbe) -> str:
    selector = probe.namespaces
    parts = []
    if selector.label_selector:
        parts.append(f"labelled {selector.label_selector}")
    if selector.names:
        parts.append(f"of {', '.join(selector.names)}")
    if selector.exclude:
        parts.append(f"except {', '.join(selector.exclude)}")
    return "namespace" + (" " + " ".join(parts) if parts else "")


def _schedule_label(spec: ScheduleSpec) -> str:
    return spec.label or spec.name or str(spec.cron)


def _schedule_matches(spec: ScheduleSpec, item: KubeObject) -> bool:
    if spec.name is not None:
        return _name(item) == spec.name
    return " ".join(str((item.get("spec") or {}).get("schedule", "")).split()) == " ".join(
        str(spec.cron).split()
    )


def _at_least(count: int) -> str:
    return "a " if count == 1 else f"at least {count} "


def _where(namespace: str | None) -> str:
    return f"{namespace}/" if namespace else ""


def _name(obj: KubeObject) -> str:
    return str((obj.get("metadata") or {}).get("name", "?"))


def _qualified(obj: KubeObject) -> str:
    """``namespace/name`` for a namespaced object, ``name`` otherwise."""
    namespace = (obj.get("metadata") or {}).get("namespace")
    return f"{namespace}/{_name(obj)}" if namespace else _name(obj)


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES])
    return shown + (f" … and {len(names) - _MAX_NAMES} more" if len(names) > _MAX_NAMES else "")


def _time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
