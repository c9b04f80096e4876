"""The Velero relay's messages: template contexts built from the views, rendered with ``velero_*`` templates.

Everything a template shows is prepared here as plain strings (times in UTC,
ages, counts with separators), so the ``.txt`` and ``.html`` variants say
the same thing and stay free of logic.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.render.message import Message, fit_lines
from bot.render.templates import Templates
from bot.velero.model import LocationView, Phase, RunKind, RunView, ScheduleView
from bot.velero.outcomes import Missed
from bot.velero.store import MissedAlert, OutcomeRecord
from config.durations import format_duration
from config.velero import VeleroSettings

if TYPE_CHECKING:
    from bot.velero.service import History, Overview, ScheduleState

_ICONS = {
    Phase.COMPLETED: "✅",
    Phase.PARTIALLY_FAILED: "⚠️",
    Phase.FAILED: "❌",
    Phase.FAILED_VALIDATION: "❌",
}
_VERBS = {
    Phase.COMPLETED: "completed",
    Phase.PARTIALLY_FAILED: "partially failed",
    Phase.FAILED: "failed",
    Phase.FAILED_VALIDATION: "failed validation",
}
# Lines of a list message, kept well inside one Matrix event (see bot.render.message).
_LIST_BUDGET = 6_000


def utc(moment: datetime | None) -> str:
    return "unknown" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def age(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    if moment > now:
        return f"in {format_duration(moment - now)}"
    return f"{format_duration(now - moment)} ago"


def number(value: int) -> str:
    return f"{value:,}"


def items(run: RunView) -> str | None:
    """ "1,204 of 1,250 items", "1,250 items", or None when Velero reported no progress."""
    if run.items_done is not None and run.items_total is not None and run.items_done != run.items_total:
        return f"{number(run.items_done)} of {number(run.items_total)} items"
    count = run.items_total if run.items_total is not None else run.items_done
    return None if count is None else f"{number(count)} items"


def counts(run: RunView) -> str | None:
    """ "3 errors, 1 warning", or None when there are neither."""
    parts = []
    if run.errors:
        parts.append(f"{number(run.errors)} error{'s' if run.errors != 1 else ''}")
    if run.warnings:
        parts.append(f"{number(run.warnings)} warning{'s' if run.warnings != 1 else ''}")
    return ", ".join(parts) or None


def namespace_flag(namespace: str) -> str:
    """`` -n <namespace>`` for the velero CLI, or nothing for its default namespace."""
    return f" -n {namespace}" if namespace and namespace != "velero" else ""


def hints(run: RunView) -> list[str]:
    """The velero commands that show more (a failed validation never ran, so it has no logs)."""
    command = f"velero {run.kind.value}"
    flag = namespace_flag(run.namespace)
    found = [f"{command} describe {run.name} --details{flag}"]
    if run.phase != Phase.FAILED_VALIDATION:
        found.append(f"{command} logs {run.name}{flag}")
    return found


def facts(run: RunView) -> str | None:
    """ "Started 2024-01-02 02:00 UTC, ran 3m12s, 1,250 items; 2 errors." or None when nothing is known."""
    parts = []
    if run.backup_name:
        parts.append(f"from backup {run.backup_name}")
    if run.started:
        parts.append(f"started {utc(run.started)}")
    if run.duration is not None:
        parts.append(f"ran {format_duration(run.duration)}")
    if (shown := items(run)) is not None:
        parts.append(shown)
    sentence = ", ".join(parts)
    if (problems := counts(run)) is not None:
        sentence = f"{sentence}; {problems}" if sentence else problems
    return f"{sentence[0].upper()}{sentence[1:]}." if sentence else None


def run_context(run: RunView) -> dict[str, Any]:
    return {
        "facts": facts(run),
        "icon": _ICONS.get(run.phase, "ℹ️"),
        "verb": _VERBS.get(run.phase, run.phase),
        "kind": run.kind.value,
        "name": run.name,
        "phase": run.phase,
        "schedule": run.schedule,
        "backup_name": run.backup_name,
        "started": utc(run.started) if run.started else None,
        "duration": format_duration(run.duration) if run.duration is not None else None,
        "items": items(run),
        "counts": counts(run),
        "failure_reason": run.failure_reason,
        "validation_errors": list(run.validation_errors),
        "hints": hints(run),
    }


def outcome(templates: Templates, run: RunView) -> Message:
    return templates.render("velero_outcome", run=run_context(run))


def summary(templates: Templates, runs: Sequence[RunView], *, now: datetime) -> Message:
    lines = fit_lines([_summary_line(run, now) for run in runs], budget=_LIST_BUDGET)
    return templates.render("velero_summary", count=len(runs), lines=lines)


def _summary_line(run: RunView, now: datetime) -> str:
    context = run_context(run)
    parts = [f"{context['icon']} {run.kind.value} {run.name} {context['verb']}"]
    if run.schedule:
        parts.append(f"(schedule {run.schedule})")
    parts.append(age(run.ended_at, now))
    detail = context["counts"] or run.failure_reason
    return " ".join(parts) + (f" — {detail}" if detail else "")


def digest(templates: Templates, records: Sequence[OutcomeRecord], *, now: datetime) -> Message:
    groups: dict[tuple[str, str | None], list[OutcomeRecord]] = {}
    for record in records:
        groups.setdefault((record.kind, record.schedule), []).append(record)
    lines = []
    for (kind, schedule), group in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        last = group[-1]
        where = f"schedule {schedule}" if schedule else f"manual {kind}s"
        detail = []
        if last.items is not None:
            detail.append(f"{number(last.items)} items")
        if last.duration_s is not None:
            detail.append(f"in {format_duration(last.duration_s)}")
        ended = None if last.ended_at is None else datetime.fromtimestamp(last.ended_at, now.tzinfo)
        plural = "s" if len(group) != 1 else ""
        line = f"{where}: {len(group)} {kind}{plural}, last {last.name} {age(ended, now)}"
        lines.append(line + (f" ({' '.join(detail)})" if detail else ""))
    backups = sum(1 for record in records if record.kind == RunKind.BACKUP.value)
    return templates.render(
        "velero_digest",
        backups=backups,
        restores=len(records) - backups,
        lines=fit_lines(lines, budget=_LIST_BUDGET),
    )


def missed(
    templates: Templates, missed: Missed, schedule: ScheduleView, *, now: datetime, settings: VeleroSettings
) -> Message:
    return templates.render(
        "velero_missed",
        schedule=schedule.name,
        cron=schedule.cron,
        namespace=schedule.namespace or settings.namespace,
        flag=namespace_flag(schedule.namespace or settings.namespace),
        expected=utc(missed.expected_at),
        overdue=format_duration(now - missed.expected_at),
        grace=format_duration(settings.missed_grace_s),
        never=missed.never,
        created=age(schedule.created, now),
        last_started=utc(missed.last_started),
        last_started_ago=age(missed.last_started, now),
    )


def missed_cleared(templates: Templates, alert: MissedAlert, run: RunView, *, now: datetime) -> Message:
    raised = datetime.fromtimestamp(alert.raised_at, now.tzinfo)
    return templates.render(
        "velero_missed_cleared",
        schedule=alert.schedule,
        backup=run.name,
        phase=run.phase,
        expected=utc(datetime.fromtimestamp(alert.expected_at, now.tzinfo)),
        raised_ago=age(raised, now),
    )


def location_down(templates: Templates, location: LocationView) -> Message:
    return templates.render(
        "velero_location_down",
        location=location.name,
        message=location.message,
        default=location.default,
        namespace=location.namespace,
        flag=namespace_flag(location.namespace),
    )


def location_up(templates: Templates, location: LocationView, *, outage: timedelta) -> Message:
    return templates.render("velero_location_up", location=location.name, outage=format_duration(outage))


# -- !backups -----------------------------------------------------------------------


def schedule_context(state: ScheduleState, now: datetime) -> dict[str, Any]:
    view = state.view
    last = state.last_backup
    if state.cron_error is not None:
        status = f"⚠️ cannot read the schedule: {state.cron_error}"
    elif view.paused:
        status = "⏸ paused"
    elif state.missed is not None:
        expected = datetime.fromtimestamp(state.missed.expected_at, now.tzinfo)
        status = f"⏰ missed: a run was due {utc(expected)} ({age(expected, now)})"
    elif state.due is not None and state.due <= now:
        status = f"due since {utc(state.due)}, within the grace"
    elif state.due is not None:
        status = f"next run {utc(state.due)} ({age(state.due, now)})"
    else:
        status = "next run unknown"
    return {
        "name": view.name,
        "cron": view.cron,
        "status": status,
        "last": None if last is None else f"{last.name} {last.phase or 'New'} {age(last.begun_at, now)}",
        "never": last is None and state.last_start is None,
        "last_start": None if last is not None or state.last_start is None else age(state.last_start, now),
    }


def overview_context(overview: Overview, now: datetime) -> dict[str, Any]:
    manual = overview.last_manual
    locations = []
    for view, record in overview.locations:
        since = None if record is None else datetime.fromtimestamp(record.since, now.tzinfo)
        text = f"{view.name}: {view.phase or 'not validated yet'}"
        if view.phase == "Unavailable":
            text = f"🔴 {text} since {age(since, now).removesuffix(' ago')}"
            if view.message:
                text += f" ({view.message})"
        locations.append(text)
    return {
        "namespace": overview.namespace,
        "listed": overview.listed,
        "problem": overview.problem,
        "schedules": [schedule_context(state, now) for state in overview.schedules],
        "manual": None
        if manual is None
        else f"{manual.name} {manual.phase or 'New'} {age(manual.begun_at, now)}",
        "locations": locations,
    }


def history_context(history: History, now: datetime) -> dict[str, Any]:
    lines = []
    for run in history.runs:
        parts = [f"{run.name} — {run.phase or 'New'}, started {age(run.begun_at, now)}"]
        if run.duration is not None:
            parts.append(f"took {format_duration(run.duration)}")
        if (shown := items(run)) is not None:
            parts.append(shown)
        line = ", ".join(parts)
        if (problems := counts(run)) is not None:
            line += f"; {problems}"
        lines.append(line)
    return {
        "schedule": schedule_context(history.state, now),
        "shown": len(history.runs),
        "total": history.total,
        "lines": fit_lines(lines, budget=_LIST_BUDGET),
        "problem": history.problem,
    }
