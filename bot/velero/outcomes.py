"""Pure decisions of the Velero relay: which outcomes deserve a message, which runs were missed.

No I/O and no clock: every function takes ``now`` (an aware datetime), so
the cron arithmetic can be tested at any instant.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from bot.velero.model import (
    LOCATION_AVAILABLE,
    LOCATION_UNAVAILABLE,
    USABLE_PHASES,
    Phase,
    RunKind,
    RunView,
    ScheduleView,
)
from config.cron import Schedule

CompletedMode = Literal["off", "digest", "each"]


class Disposition(StrEnum):
    """What becomes of an outcome; the values are stored (``velero_outcomes.disposition``)."""

    # A message of its own (or a line of a summary).
    POST = "posted"
    # A line of the next daily digest.
    DIGEST = "digest"


def disposition(run: RunView, completed: CompletedMode) -> Disposition | None:
    """None while the run is not over, or for a completed run when completed runs are ``off``.

    Failures, partial failures and failed validations are always posted.
    """
    if not run.terminal:
        return None
    if run.phase != Phase.COMPLETED:
        return Disposition.POST
    if completed == "each":
        return Disposition.POST
    if completed == "digest":
        return Disposition.DIGEST
    return None


def recent_enough(run: RunView, now: datetime, max_age: timedelta) -> bool:
    """Whether an outcome is young enough to be posted at all (catch-up after a long outage is bounded)."""
    ended = run.ended_at
    return ended is not None and now - ended <= max_age


@dataclass(frozen=True, slots=True)
class Missed:
    """A scheduled run that did not start in time."""

    schedule: str
    # The first run (by the cron expression) that no backup was started for.
    expected_at: datetime
    # No backup of this schedule ever (as far as the cluster remembers).
    never: bool
    last_started: datetime | None


def last_started(schedule: ScheduleView, runs: Iterable[RunView]) -> datetime | None:
    """The latest start of a backup of ``schedule``: its labelled Backups and ``status.lastBackup``.

    ``lastBackup`` still counts once the Backups themselves have expired.
    """
    starts = [
        begun
        for run in runs
        if run.kind is RunKind.BACKUP and run.schedule == schedule.name and (begun := run.begun_at)
    ]
    if schedule.last_backup is not None:
        starts.append(schedule.last_backup)
    return max(starts, default=None)


def due_run(
    schedule: ScheduleView,
    cron: Schedule,
    *,
    last_start: datetime | None,
    unpaused_at: datetime | None = None,
) -> datetime | None:
    """The next run the schedule owes: the first fire time after its last backup.

    Without any backup, after the schedule's creation. After the relay saw
    the schedule unpaused, not before that moment: Velero catches up at once
    then, and the time it was paused is not a miss. None when nothing is
    known to count from.
    """
    candidates = [moment for moment in (last_start, unpaused_at) if moment is not None]
    if last_start is None and schedule.created is not None:
        candidates.append(schedule.created)
    if not candidates:
        return None
    return cron.next_after(max(candidates))


def missed_run(
    schedule: ScheduleView,
    cron: Schedule,
    *,
    last_start: datetime | None,
    now: datetime,
    grace: timedelta,
    unpaused_at: datetime | None = None,
) -> Missed | None:
    """A ``Missed`` when the schedule is unpaused and its due run is older than ``grace``."""
    if schedule.paused:
        return None
    due = due_run(schedule, cron, last_start=last_start, unpaused_at=unpaused_at)
    if due is None or due + grace > now:
        return None
    return Missed(schedule.name, due, never=last_start is None, last_started=last_start)


def clears_missed(run: RunView, schedule: str, expected_at: datetime) -> bool:
    """Whether ``run`` ends a missed-run alert: a usable backup of the schedule begun at or after the miss."""
    begun = run.begun_at
    return (
        run.kind is RunKind.BACKUP
        and run.schedule == schedule
        and run.phase in USABLE_PHASES
        and begun is not None
        and begun >= expected_at
    )


class LocationChange(StrEnum):
    UNAVAILABLE = "unavailable"
    RECOVERED = "recovered"


def location_change(previous: str | None, current: str) -> LocationChange | None:
    """A storage location's phase change worth a message.

    A location first seen unavailable is reported; one first seen available
    is not. A location without a phase yet (not validated) changes nothing.
    """
    if current == LOCATION_UNAVAILABLE and previous != LOCATION_UNAVAILABLE:
        return LocationChange.UNAVAILABLE
    if current == LOCATION_AVAILABLE and previous == LOCATION_UNAVAILABLE:
        return LocationChange.RECOVERED
    return None
