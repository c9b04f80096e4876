"""The Velero relay's pure decisions: reading objects, cron arithmetic, outcomes and missed runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.velero.model import RunKind, parse_location, parse_run, parse_schedule
from bot.velero.outcomes import (
    Disposition,
    LocationChange,
    clears_missed,
    disposition,
    due_run,
    last_started,
    location_change,
    missed_run,
    recent_enough,
)
from config.cron import parse_cron

# A Wednesday, so weekday rules have something to bite on.
NOW = datetime(2024, 1, 3, 12, 0, tzinfo=UTC)
GRACE = timedelta(hours=1)
SCHEDULE_CREATED = datetime(2023, 12, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def backup(
    name: str,
    phase: str,
    *,
    schedule: str | None = "daily",
    started: datetime | None = None,
    completed: datetime | None = None,
    created: datetime | None = None,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    labels = {"velero.io/schedule-name": schedule} if schedule else {}
    body: dict[str, Any] = {"phase": phase, **(status or {})}
    if started:
        body["startTimestamp"] = stamp(started)
    if completed:
        body["completionTimestamp"] = stamp(completed)
    return {
        "apiVersion": "velero.io/v1",
        "kind": "Backup",
        "metadata": {
            "name": name,
            "namespace": "velero",
            "uid": f"uid-{name}",
            "labels": labels,
            "creationTimestamp": stamp(created or started or NOW),
        },
        "status": body,
    }


def schedule(
    name: str = "daily",
    cron: str = "0 2 * * *",
    *,
    created: datetime = SCHEDULE_CREATED,
    paused: bool = False,
    last_backup: datetime | None = None,
) -> dict[str, Any]:
    status = {"phase": "Enabled"}
    if last_backup:
        status["lastBackup"] = stamp(last_backup)
    return {
        "metadata": {"name": name, "namespace": "velero", "creationTimestamp": stamp(created)},
        "spec": {"schedule": cron, "paused": paused},
        "status": status,
    }


# --- reading objects ---------------------------------------------------------------


def test_a_backup_is_read_with_its_counts_times_and_schedule() -> None:
    """Phase, schedule label, errors/warnings, items from status.progress and the duration are read."""
    run = parse_run(
        RunKind.BACKUP,
        backup(
            "daily-1",
            "PartiallyFailed",
            started=at("2024-01-03T02:00:00"),
            completed=at("2024-01-03T02:03:12"),
            status={"errors": 3, "warnings": 1, "progress": {"itemsBackedUp": 1204, "totalItems": 1250}},
        ),
    )
    assert (run.phase, run.schedule, run.errors, run.warnings) == ("PartiallyFailed", "daily", 3, 1)
    assert (run.items_done, run.items_total) == (1204, 1250)
    assert run.duration == timedelta(minutes=3, seconds=12)
    assert run.terminal


def test_odd_fields_never_raise_and_free_text_is_cut() -> None:
    """Mistyped fields become None/0, booleans are not counts, long reasons and error lists are cut."""
    run = parse_run(
        RunKind.BACKUP,
        {
            "metadata": {"name": "x", "labels": "nope"},
            "status": {
                "errors": True,
                "warnings": "3",
                "startTimestamp": "yesterday",
                "failureReason": "boom " * 200,
                "validationErrors": [f"e{i}" for i in range(15)] + [7],
            },
        },
    )
    assert (run.errors, run.warnings, run.started, run.schedule) == (0, 0, None, None)
    assert run.failure_reason is not None and len(run.failure_reason) == 300
    assert run.validation_errors[-1] == "… and 5 more" and len(run.validation_errors) == 11


def test_a_restore_names_its_backup_and_schedule() -> None:
    """A Restore names spec.scheduleName, spec.backupName and counts status.progress.itemsRestored."""
    run = parse_run(
        RunKind.RESTORE,
        {
            "metadata": {"name": "r1", "namespace": "velero"},
            "spec": {"backupName": "daily-1", "scheduleName": "daily"},
            "status": {"phase": "Failed", "progress": {"itemsRestored": 5, "totalItems": 9}},
        },
    )
    assert (run.backup_name, run.schedule, run.items_done, run.items_total) == ("daily-1", "daily", 5, 9)


def test_the_outcome_key_survives_a_resync_with_a_new_uid() -> None:
    """The same backup re-created by Velero's sync (new uid) has the same key; a reused name does not."""
    first = parse_run(RunKind.BACKUP, backup("b", "Failed", started=at("2024-01-03T02:00:00")))
    synced_obj = backup("b", "Failed", started=at("2024-01-03T02:00:00"), created=NOW)
    synced_obj["metadata"]["uid"] = "another"
    again = parse_run(RunKind.BACKUP, backup("b", "Failed", started=at("2024-01-03T05:00:00")))
    assert parse_run(RunKind.BACKUP, synced_obj).outcome_key == first.outcome_key
    assert again.outcome_key != first.outcome_key


def test_schedules_and_locations_are_read() -> None:
    """A Schedule's cron, paused flag and lastBackup, a location's phase and message are read."""
    view = parse_schedule(schedule(paused=True, last_backup=at("2024-01-03T02:00:10")))
    assert (view.cron, view.paused, view.last_backup) == ("0 2 * * *", True, at("2024-01-03T02:00:10"))
    location = parse_location(
        {
            "metadata": {"name": "default"},
            "spec": {"default": True},
            "status": {"phase": "Unavailable", "message": "no bucket"},
        }
    )
    assert (location.phase, location.message, location.default) == ("Unavailable", "no bucket", True)


# --- cron (the table of robfig/cron cases is in test_cron.py) --------------------------------


def test_the_next_run_is_strictly_after_the_given_moment() -> None:
    """A backup started exactly at a fire time owes the next fire time, not the same one."""
    cron = parse_cron("0 2 * * *")
    assert cron.next_after(at("2024-01-03T02:00:00")) == at("2024-01-04T02:00:00")


def test_the_relay_reads_both_restricted_day_fields_as_either() -> None:
    """`0 3 1 * 1` owes a run on the 1st or on a Monday, whichever comes first (as Velero runs it)."""
    cron = parse_cron("0 3 1 * 1")
    view = parse_schedule(schedule(cron="0 3 1 * 1"))
    assert due_run(view, cron, last_start=at("2026-11-20T03:00:00")) == at("2026-11-23T03:00:00")
    assert due_run(view, cron, last_start=at("2026-11-30T03:00:00")) == at("2026-12-01T03:00:00")


# --- outcomes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "completed", "expected"),
    [
        ("Failed", "off", Disposition.POST),
        ("PartiallyFailed", "off", Disposition.POST),
        ("FailedValidation", "digest", Disposition.POST),
        ("Completed", "each", Disposition.POST),
        ("Completed", "digest", Disposition.DIGEST),
        ("Completed", "off", None),
        ("InProgress", "each", None),
        ("WaitingForPluginOperationsPartiallyFailed", "each", None),
        ("Deleting", "each", None),
        ("New", "each", None),
    ],
)
def test_only_finished_runs_are_reported_and_completed_as_configured(
    phase: str, completed: Any, expected: Disposition | None
) -> None:
    """Failures always post; Completed follows velero.completed; phases on the way post nothing."""
    run = parse_run(RunKind.BACKUP, backup("b", phase, started=NOW))
    assert disposition(run, completed) is expected


def test_outcomes_older_than_the_catch_up_window_are_not_posted() -> None:
    """After a long outage, only outcomes within catch_up_max_age_s are worth a message."""
    old = parse_run(RunKind.BACKUP, backup("b", "Failed", started=NOW - timedelta(days=8)))
    fresh = parse_run(RunKind.BACKUP, backup("c", "Failed", started=NOW - timedelta(days=6)))
    assert not recent_enough(old, NOW, timedelta(days=7))
    assert recent_enough(fresh, NOW, timedelta(days=7))


# --- missed schedules --------------------------------------------------------------------


def test_a_run_is_missed_only_once_the_grace_after_its_due_time_has_passed() -> None:
    """Last backup yesterday 02:00 → today's 02:00 run is due; missed after 03:00 (grace 1 h), not before."""
    view = parse_schedule(schedule())
    cron = parse_cron(view.cron)
    last = at("2024-01-02T02:00:05")
    assert missed_run(view, cron, last_start=last, now=at("2024-01-03T02:59:59"), grace=GRACE) is None
    missed = missed_run(view, cron, last_start=last, now=at("2024-01-03T03:00:00"), grace=GRACE)
    assert missed is not None
    assert (missed.expected_at, missed.never, missed.last_started) == (at("2024-01-03T02:00:00"), False, last)


def test_a_backup_started_after_the_due_time_means_nothing_is_missed() -> None:
    """Today's run started a little late: nothing is missed until tomorrow's run plus grace."""
    view = parse_schedule(schedule())
    cron = parse_cron(view.cron)
    assert missed_run(view, cron, last_start=at("2024-01-03T02:00:40"), now=NOW, grace=GRACE) is None


def test_a_schedule_that_never_produced_a_backup_is_missed_after_its_first_run() -> None:
    """Without any backup, the first fire time after creation is owed; the alert says 'never'."""
    view = parse_schedule(schedule(created=at("2024-01-02T10:00:00")))
    cron = parse_cron(view.cron)
    missed = missed_run(view, cron, last_start=None, now=NOW, grace=GRACE)
    assert missed is not None and missed.never and missed.expected_at == at("2024-01-03T02:00:00")
    young = parse_schedule(schedule(created=at("2024-01-03T02:30:00")))
    assert missed_run(young, cron, last_start=None, now=NOW, grace=GRACE) is None


def test_paused_schedules_are_never_missed_and_unpausing_restarts_the_clock() -> None:
    """A paused schedule owes nothing; once seen unpaused, runs before that moment are not misses."""
    cron = parse_cron("0 * * * *")
    last = at("2024-01-01T00:00:00")
    paused = parse_schedule(schedule(cron="0 * * * *", paused=True))
    assert missed_run(paused, cron, last_start=last, now=NOW, grace=GRACE) is None
    running = parse_schedule(schedule(cron="0 * * * *"))
    assert missed_run(running, cron, last_start=last, now=NOW, grace=GRACE) is not None
    unpaused = NOW - timedelta(minutes=10)
    assert missed_run(running, cron, last_start=last, now=NOW, grace=GRACE, unpaused_at=unpaused) is None
    assert due_run(running, cron, last_start=last, unpaused_at=unpaused) == at("2024-01-03T12:00:00")


def test_every_schedules_are_due_one_interval_after_the_last_backup() -> None:
    """@every 6h: due 6 h after the last start (to the second), missed after the grace."""
    view = parse_schedule(schedule(cron="@every 6h"))
    cron = parse_cron(view.cron)
    last = at("2024-01-03T04:59:59")
    assert due_run(view, cron, last_start=last) == at("2024-01-03T10:59:59")
    assert missed_run(view, cron, last_start=last, now=NOW, grace=GRACE) is not None
    assert missed_run(view, cron, last_start=last, now=NOW, grace=timedelta(hours=2)) is None


def test_the_last_start_counts_labelled_backups_and_the_schedules_last_backup() -> None:
    """Created-but-queued backups count as started; lastBackup counts after the Backups expired."""
    view = parse_schedule(schedule(last_backup=at("2024-01-01T02:00:00")))
    queued = parse_run(RunKind.BACKUP, backup("q", "New", created=at("2024-01-03T02:00:03")))
    other = parse_run(RunKind.BACKUP, backup("o", "Completed", schedule="weekly", started=NOW))
    assert last_started(view, [queued, other]) == at("2024-01-03T02:00:03")
    assert last_started(view, [other]) == at("2024-01-01T02:00:00")
    assert last_started(parse_schedule(schedule()), [other]) is None


def test_a_missed_alert_clears_with_a_usable_backup_begun_since_the_miss() -> None:
    """Completed or PartiallyFailed backups of the schedule begun at/after the due time clear; others not."""
    due = at("2024-01-03T02:00:00")

    def clears(phase: str, started: datetime, schedule_name: str = "daily") -> bool:
        run = parse_run(RunKind.BACKUP, backup("b", phase, schedule=schedule_name, started=started))
        return clears_missed(run, "daily", due)

    assert clears("Completed", at("2024-01-03T05:00:00"))
    assert clears("PartiallyFailed", due)
    assert not clears("Failed", at("2024-01-03T05:00:00"))
    assert not clears("InProgress", at("2024-01-03T05:00:00"))
    assert not clears("Completed", at("2024-01-03T01:59:59"))
    assert not clears("Completed", at("2024-01-03T05:00:00"), "weekly")


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        (None, "Unavailable", LocationChange.UNAVAILABLE),
        ("Available", "Unavailable", LocationChange.UNAVAILABLE),
        ("Unavailable", "Unavailable", None),
        ("Unavailable", "Available", LocationChange.RECOVERED),
        (None, "Available", None),
        ("Available", "", None),
    ],
)
def test_storage_locations_report_becoming_unavailable_and_recovering(
    previous: str | None, current: str, expected: LocationChange | None
) -> None:
    """Only Available→Unavailable (or first seen Unavailable) and Unavailable→Available are changes."""
    assert location_change(previous, current) is expected
