"""The one cron reader (config/cron.py), checked against what robfig/cron v3 documents.

robfig/cron v3 is what Velero and Kubernetes read schedules with.

The table cases come from robfig/cron v3's ``doc.go``, ``spec_test.go`` and
``parser_test.go`` (seconds field dropped: the standard parser has five
fields); the property tests pin the relation between ``next_after`` and
``previous_fire`` at any instant, including the nights a ``CRON_TZ`` zone
changes its clocks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from config.cron import CalendarSchedule, CronError, EverySchedule, due_by, parse_cron

NEW_YORK = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")


def ny(text: str) -> datetime:
    """A wall-clock time with an explicit offset (robfig's tests write them so)."""
    return datetime.fromisoformat(text).astimezone(UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- the table: robfig/cron's own cases --------------------------------------------------

# (moment, spec, the next run robfig computes): spec_test.go TestNext, five-field form.
NEXT_CASES = [
    ("2012-07-09T14:45:00", "0/15 * * * *", "2012-07-09T15:00:00"),
    ("2012-07-09T14:59:00", "0/15 * * * *", "2012-07-09T15:00:00"),
    ("2012-07-09T14:59:59", "0/15 * * * *", "2012-07-09T15:00:00"),
    ("2012-07-09T15:45:00", "20-35/15 * * * *", "2012-07-09T16:20:00"),
    ("2012-07-09T23:46:00", "*/15 * * * *", "2012-07-10T00:00:00"),
    ("2012-07-09T23:45:00", "20-35/15 * * * *", "2012-07-10T00:20:00"),
    ("2012-07-09T23:35:51", "20-35/15 1/2 * * *", "2012-07-10T01:20:00"),
    ("2012-07-09T23:35:51", "20-35/15 10-12 * * *", "2012-07-10T10:20:00"),
    ("2012-07-09T23:35:51", "20-35/15 1/2 */2 * *", "2012-07-11T01:20:00"),
    ("2012-07-09T23:35:51", "20-35/15 * 9-20 * *", "2012-07-10T00:20:00"),
    ("2012-07-09T23:35:51", "20-35/15 * 9-20 Jul *", "2012-07-10T00:20:00"),
    ("2012-07-09T23:35:00", "0 0 9 Apr-Oct ?", "2012-08-09T00:00:00"),
    ("2012-07-09T23:35:00", "0 0 */5 Apr,Aug,Oct Mon", "2012-08-01T00:00:00"),
    ("2012-07-09T23:35:00", "0 0 */5 Oct Mon", "2012-10-01T00:00:00"),
    ("2012-07-09T23:35:00", "0 0 * Feb Mon", "2013-02-04T00:00:00"),
    ("2012-07-09T23:35:00", "0 0 * Feb Mon/2", "2013-02-01T00:00:00"),
    ("2012-12-31T23:59:45", "* * * * *", "2013-01-01T00:00:00"),
    ("2012-07-09T23:35:00", "0 0 29 Feb ?", "2016-02-29T00:00:00"),
]

# The daylight-saving cases of TestNext (America/New_York), with their offsets.
DST_CASES = [
    # 2 a.m. EST (-5) -> 3 a.m. EDT (-4): the 2:30 of that night does not exist.
    ("2012-03-11T00:00:00-05:00", "TZ=America/New_York 30 2 11 Mar ?", "2013-03-11T02:30:00-04:00"),
    ("2012-03-11T00:00:00-05:00", "TZ=America/New_York 0 * * * ?", "2012-03-11T01:00:00-05:00"),
    ("2012-03-11T01:00:00-05:00", "TZ=America/New_York 0 * * * ?", "2012-03-11T03:00:00-04:00"),
    ("2012-03-11T03:00:00-04:00", "CRON_TZ=America/New_York 0 * * * ?", "2012-03-11T04:00:00-04:00"),
    ("2012-03-11T00:00:00-05:00", "TZ=America/New_York 0 1 * * ?", "2012-03-11T01:00:00-05:00"),
    ("2012-03-11T01:00:00-05:00", "TZ=America/New_York 0 1 * * ?", "2012-03-12T01:00:00-04:00"),
    # A nightly 2 a.m. job is skipped that night.
    ("2012-03-11T00:00:00-05:00", "TZ=America/New_York 0 2 * * ?", "2012-03-12T02:00:00-04:00"),
    # 2 a.m. EDT (-4) -> 1 a.m. EST (-5): the 1 a.m. hour happens twice, and so does a 1 a.m. job.
    ("2012-11-04T00:00:00-04:00", "TZ=America/New_York 30 2 04 Nov ?", "2012-11-04T02:30:00-05:00"),
    ("2012-11-04T01:45:00-04:00", "TZ=America/New_York 30 1 04 Nov ?", "2012-11-04T01:30:00-05:00"),
    ("2012-11-04T00:00:00-04:00", "TZ=America/New_York 0 * * * ?", "2012-11-04T01:00:00-04:00"),
    ("2012-11-04T01:00:00-04:00", "TZ=America/New_York 0 * * * ?", "2012-11-04T01:00:00-05:00"),
    ("2012-11-04T01:00:00-05:00", "TZ=America/New_York 0 * * * ?", "2012-11-04T02:00:00-05:00"),
    ("2012-11-04T00:00:00-04:00", "TZ=America/New_York 0 1 * * ?", "2012-11-04T01:00:00-04:00"),
    ("2012-11-04T01:00:00-04:00", "TZ=America/New_York 0 1 * * ?", "2012-11-04T01:00:00-05:00"),
    ("2012-11-04T01:00:00-05:00", "TZ=America/New_York 0 1 * * ?", "2012-11-05T01:00:00-05:00"),
    ("2012-11-04T00:00:00-04:00", "TZ=America/New_York 0 2 * * ?", "2012-11-04T02:00:00-05:00"),
    ("2012-11-04T02:00:00-05:00", "TZ=America/New_York 0 2 * * ?", "2012-11-05T02:00:00-05:00"),
    ("2012-11-04T00:00:00-04:00", "TZ=America/New_York 0 3 * * ?", "2012-11-04T03:00:00-05:00"),
    ("2012-11-04T00:00:00-04:00", "TZ=America/New_York 0 3 3 * ?", "2012-12-03T03:00:00-05:00"),
    # Midnight that does not exist in São Paulo (robfig/cron issue 157).
    ("2018-10-17T05:00:00-04:00", "TZ=America/Sao_Paulo 0 9 10 * ?", "2018-11-10T06:00:00-05:00"),
    ("2018-02-14T05:00:00-05:00", "TZ=America/Sao_Paulo 0 9 22 * ?", "2018-02-22T07:00:00-05:00"),
]

# spec_test.go TestActivation: (the instant, spec, whether it is a run).
ACTIVATION_CASES = [
    ("2012-07-09T15:00", "0/15 * * * *", True),
    ("2012-07-09T15:45", "0/15 * * * *", True),
    ("2012-07-09T15:40", "0/15 * * * *", False),
    ("2012-07-09T15:05", "5/15 * * * *", True),
    ("2012-07-09T15:20", "5/15 * * * *", True),
    ("2012-07-09T15:50", "5/15 * * * *", True),
    ("2012-07-15T15:00", "0/15 * * Jul *", True),
    ("2012-07-15T15:00", "0/15 * * Jun *", False),
    ("2012-07-15T08:30", "30 08 ? Jul Sun", True),
    ("2012-07-15T08:30", "30 08 15 Jul ?", True),
    ("2012-07-16T08:30", "30 08 ? Jul Sun", False),
    ("2012-07-16T08:30", "30 08 15 Jul ?", False),
    ("2012-07-09T15:00", "@hourly", True),
    ("2012-07-09T15:04", "@hourly", False),
    ("2012-07-09T15:00", "@daily", False),
    ("2012-07-09T00:00", "@daily", True),
    ("2012-07-09T00:00", "@weekly", False),
    ("2012-07-08T00:00", "@weekly", True),
    ("2012-07-08T01:00", "@weekly", False),
    ("2012-07-08T00:00", "@monthly", False),
    ("2012-07-01T00:00", "@monthly", True),
    # Day of month and day of week both restricted: either one matching is enough.
    ("2012-07-15T00:00", "* * 1,15 * Sun", True),
    ("2012-06-15T00:00", "* * 1,15 * Sun", True),
    ("2012-08-01T00:00", "* * 1,15 * Sun", True),
    ("2012-07-15T00:00", "* * */10 * Sun", True),
    # One of them a star: both must match.
    ("2012-07-15T00:00", "* * * * Mon", False),
    ("2012-07-09T00:00", "* * 1,15 * *", False),
    ("2012-07-15T00:00", "* * 1,15 * *", True),
    ("2012-07-15T00:00", "* * */2 * Sun", True),
    # "*/1" keeps the star (only a step above 1 drops it): both must match.
    ("2012-07-16T00:00", "* * 1,15 * */1", False),
    # Descriptors of doc.go and their spelled-out forms.
    ("2012-01-01T00:00", "@yearly", True),
    ("2012-01-01T00:00", "@annually", True),
    ("2012-02-01T00:00", "@yearly", False),
    ("2012-07-10T00:00", "@midnight", True),
]


@pytest.mark.parametrize(("moment", "spec", "expected"), NEXT_CASES)
def test_next_run_matches_robfig_spec_tests(moment: str, spec: str, expected: str) -> None:
    """Steps, ranges, names, wrap-arounds and leap days give robfig's next run (UTC)."""
    assert parse_cron(spec).next_after(utc(moment)) == utc(expected)


@pytest.mark.parametrize(("moment", "spec", "expected"), DST_CASES)
def test_next_run_across_daylight_saving_matches_robfig(moment: str, spec: str, expected: str) -> None:
    """In a TZ=/CRON_TZ= zone a skipped hour never runs and a repeated hour runs twice, as in robfig."""
    assert parse_cron(spec).next_after(ny(moment)) == ny(expected)


@pytest.mark.parametrize(("moment", "spec", "expected"), ACTIVATION_CASES)
def test_activation_matches_robfig(moment: str, spec: str, expected: bool) -> None:
    """Whether an instant is a run: robfig's activation table (day OR, star rules, descriptors)."""
    instant = utc(moment)
    assert (parse_cron(spec).next_after(instant - timedelta(seconds=1)) == instant) is expected


@pytest.mark.parametrize(
    ("spec", "moment", "previous", "following"),
    [
        # The schedule: 03:00 on the 1st OR on Mondays (not "the 1st when it is a Monday").
        ("0 3 1 * 1", "2026-12-03T12:00:00", "2026-12-01T03:00:00", "2026-12-07T03:00:00"),
        ("0 3 1 * 1", "2026-11-30T12:00:00", "2026-11-30T03:00:00", "2026-12-01T03:00:00"),
        ("0 3 * * 0", "2026-03-04T12:00:00", "2026-03-01T03:00:00", "2026-03-08T03:00:00"),
        ("0 3 * * SUN", "2026-03-04T12:00:00", "2026-03-01T03:00:00", "2026-03-08T03:00:00"),
        ("0 3 * * sun", "2026-03-04T12:00:00", "2026-03-01T03:00:00", "2026-03-08T03:00:00"),
        ("0 2 * * *", "2026-03-04T02:00:00", "2026-03-04T02:00:00", "2026-03-05T02:00:00"),
        ("0 0 * * 5-6", "2026-03-04T12:00:00", "2026-02-28T00:00:00", "2026-03-06T00:00:00"),
        ("0 9 * * */2", "2026-03-04T12:00:00", "2026-03-03T09:00:00", "2026-03-05T09:00:00"),
        (
            "CRON_TZ=Europe/Paris 0 3 * * *",
            "2026-03-04T12:00:00",
            "2026-03-04T02:00:00",
            "2026-03-05T02:00:00",
        ),
        ("TZ=Asia/Tokyo 30 04 * * *", "2026-03-04T12:00:00", "2026-03-03T19:30:00", "2026-03-04T19:30:00"),
        ("CRON_TZ=UTC  5 * * * *", "2026-03-04T12:00:00", "2026-03-04T11:05:00", "2026-03-04T12:05:00"),
    ],
)
def test_previous_and_next_runs(spec: str, moment: str, previous: str, following: str) -> None:
    """The latest run at or before a moment and the first one after it, the way Velero counts them."""
    schedule = parse_cron(spec)
    assert schedule.previous_fire(utc(moment)) == utc(previous)
    assert schedule.next_after(utc(moment)) == utc(following)


def test_a_schedule_that_never_fires_has_no_runs() -> None:
    """robfig accepts 30 February and 31 April but finds no run: neither does this reader."""
    for spec in ("0 0 30 Feb ?", "0 0 31 Apr ?"):
        schedule = parse_cron(spec)
        assert schedule.next_after(utc("2012-07-09T23:35:00")) is None
        assert schedule.previous_fire(utc("2012-07-09T23:35:00")) is None


@pytest.mark.parametrize(
    ("spec", "interval"),
    [
        ("@every 1h30m", timedelta(hours=1, minutes=30)),
        ("@every 1h30m10s", timedelta(hours=1, minutes=30, seconds=10)),
        ("@every 5m", timedelta(minutes=5)),
        ("@every 1.5h", timedelta(hours=1, minutes=30)),
        ("@every 2500ms", timedelta(seconds=2)),  # truncated to whole seconds
        ("@every 500ms", timedelta(seconds=1)),  # below a second: one second
        ("CRON_TZ=Asia/Tokyo @every 6h", timedelta(hours=6)),
    ],
)
def test_every_reads_go_durations_as_robfig(spec: str, interval: timedelta) -> None:
    """@every takes a Go duration, truncated to whole seconds and at least one second."""
    schedule = parse_cron(spec)
    assert isinstance(schedule, EverySchedule)
    assert schedule.interval == interval


def test_every_runs_an_interval_after_the_given_moment_and_has_no_calendar_previous() -> None:
    """@every counts from the last run (to the second); it has no fixed times, so no previous run."""
    schedule = parse_cron("@every 6h")
    assert schedule.next_after(utc("2024-01-03T04:59:59.700000")) == utc("2024-01-03T10:59:59")
    assert schedule.previous_fire(utc("2024-01-03T12:00:00")) is None
    assert schedule.longest_gap(utc("2024-01-03T12:00:00")) == timedelta(hours=6)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "xyz",
        "* * * *",
        "* * * * * *",
        "60 0 * * *",
        "0 24 * * *",
        "0 0 0 * *",
        "0 0 32 * *",
        "0 0 * 13 *",
        "0 0 * * 7",  # robfig's day of week is 0-6 (SUN-SAT); 7 is out of range
        "0 0 * * 5-7",
        "0 0 * * XYZ",
        "0 0 * * sunday",
        "* 5 j * *",
        "5--5 * * * *",
        "*//2 * * * *",
        "*/-12 * * * *",
        "5-3 * * * *",
        "*/0 * * * *",
        "15/0 * * * *",
        "@every Xm",
        "@every",
        "@every 10x",
        "@every 1d",
        "@unrecognized",
        "@Daily",
        "TZ=No/Where 0 * * * *",
        "CRON_TZ=Europe/Paris",
    ],
)
def test_expressions_robfig_refuses_are_refused(spec: str) -> None:
    """What robfig's parser rejects (field count, ranges, steps, names, descriptors, zones) is a CronError."""
    with pytest.raises(CronError):
        parse_cron(spec)


def test_the_spec_zone_prefix_wins_over_the_given_zone() -> None:
    """A CronJob's spec.timeZone is the default zone; a CRON_TZ= prefix in the schedule overrides it."""
    assert parse_cron("0 3 * * *", "Europe/Paris").next_after(utc("2026-07-01T00:00:00")) == utc(
        "2026-07-01T01:00:00"
    )
    assert parse_cron("CRON_TZ=UTC 0 3 * * *", "Europe/Paris").next_after(utc("2026-07-01T00:00:00")) == utc(
        "2026-07-01T03:00:00"
    )


def test_longest_gap_of_common_schedules() -> None:
    """Weekly is 7 days, workdays leave a 3-day weekend, minutely is a minute, 6-hourly is 6 hours."""
    wednesday = utc("2026-03-04T12:00:00")
    assert parse_cron("0 3 * * 0").longest_gap(wednesday) == timedelta(days=7)
    assert parse_cron("0 0 * * 1-5").longest_gap(wednesday) == timedelta(days=3)
    assert parse_cron("* * * * *").longest_gap(wednesday) == timedelta(minutes=1)
    assert parse_cron("0 */6 * * *").longest_gap(wednesday) == timedelta(hours=6)
    assert parse_cron("0 0 30 Feb *").longest_gap(wednesday) is None


def test_due_by_for_calendar_and_every_schedules() -> None:
    """The run that should have started by a cutoff: the previous fire, or one interval after the last run."""
    cutoff = utc("2024-01-03T12:00:00")
    assert due_by(parse_cron("0 2 * * *"), cutoff, last_run=None, created=None) == utc("2024-01-03T02:00:00")
    every = parse_cron("@every 6h")
    # Last run recent enough: nothing owed after it, so the last run itself is what was due.
    assert due_by(every, cutoff, last_run=utc("2024-01-03T07:00:00"), created=None) == utc(
        "2024-01-03T07:00:00"
    )
    # Last run too old: the run one interval after it was due.
    assert due_by(every, cutoff, last_run=utc("2024-01-03T05:00:00"), created=None) == utc(
        "2024-01-03T11:00:00"
    )
    # Never ran: counted from the creation; nothing known to count from is None.
    assert due_by(every, cutoff, last_run=None, created=utc("2024-01-03T01:00:00")) == utc(
        "2024-01-03T07:00:00"
    )
    assert due_by(every, cutoff, last_run=None, created=utc("2024-01-03T08:00:00")) is None
    assert due_by(every, cutoff, last_run=None, created=None) is None


# --- properties ----------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "America/Sao_Paulo"]
# Instants of clock changes in those zones (UTC): the nights the properties must hold around.
TRANSITIONS = [
    datetime(2026, 3, 29, 1, tzinfo=UTC),  # Paris, spring forward
    datetime(2026, 10, 25, 1, tzinfo=UTC),  # Paris, fall back
    datetime(2026, 3, 8, 7, tzinfo=UTC),  # New York, spring forward
    datetime(2026, 11, 1, 6, tzinfo=UTC),  # New York, fall back
    datetime(2026, 4, 4, 15, tzinfo=UTC),  # Lord Howe, half an hour back
    datetime(2026, 10, 3, 15, 30, tzinfo=UTC),  # Lord Howe, half an hour forward
    datetime(2018, 11, 4, 3, tzinfo=UTC),  # São Paulo, midnight skipped
    datetime(2019, 2, 17, 2, tzinfo=UTC),  # São Paulo, back an hour at midnight
]


def _field(low: int, high: int, names: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    value = st.integers(low, high).map(str)
    if names:
        value = value | st.sampled_from(names)
    single = value
    span = st.tuples(st.integers(low, high), st.integers(low, high)).map(
        lambda pair: f"{min(pair)}-{max(pair)}"
    )
    stepped = st.tuples(
        st.sampled_from(["*", str(low), f"{low}-{high}"]), st.integers(1, high - low + 1)
    ).map(lambda pair: f"{pair[0]}/{pair[1]}")
    item = st.sampled_from(["*", "?"]) | single | span | stepped
    return st.lists(item, min_size=1, max_size=3).map(",".join)


SPECS = st.tuples(
    _field(0, 59),
    _field(0, 23),
    _field(1, 31),
    _field(1, 12, ("jan", "Feb", "MAR", "dec")),
    _field(0, 6, ("sun", "Mon", "SAT")),
).map(" ".join) | st.sampled_from(
    ["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "0 2 * * *", "30 2 * * *"]
)


@st.composite
def moments(draw: st.DrawFn) -> datetime:
    """Instants near a clock change (within a day and a half) or anywhere in 2000-2040."""
    if draw(st.booleans()):
        base = draw(st.sampled_from(TRANSITIONS))
        return base + timedelta(seconds=draw(st.integers(-36 * 3600, 36 * 3600)))
    naive = draw(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)))
    return naive.replace(tzinfo=UTC)


def _schedule(spec: str, zone: str) -> CalendarSchedule:
    schedule = parse_cron(f"CRON_TZ={zone} {spec}")
    assert isinstance(schedule, CalendarSchedule)
    return schedule


def _matches(schedule: CalendarSchedule, instant: datetime) -> bool:
    """An independent reading of a run: the wall clock in the zone matches every field, to the minute."""
    local = instant.astimezone(schedule.zone)
    if instant.second or instant.microsecond:
        return False
    weekday = (local.weekday() + 1) % 7
    day_of_month, day_of_week = local.day in schedule.days, weekday in schedule.weekdays
    day = (day_of_month or day_of_week) if schedule.either_day else (day_of_month and day_of_week)
    return (
        local.minute in schedule.minutes
        and local.hour in schedule.hours
        and local.month in schedule.months
        and day
    )


@settings(max_examples=300, deadline=None)
@given(spec=SPECS, zone=st.sampled_from(ZONES), moment=moments())
@example(spec="30 2 * * *", zone="Europe/Paris", moment=datetime(2026, 3, 29, 0, 30, tzinfo=UTC))
@example(spec="30 2 * * *", zone="Europe/Paris", moment=datetime(2026, 10, 25, 0, 30, tzinfo=UTC))
@example(spec="0 0 * * *", zone="America/Sao_Paulo", moment=datetime(2018, 11, 3, 12, tzinfo=UTC))
def test_previous_of_next_is_at_or_before_and_nothing_runs_in_between(
    spec: str, zone: str, moment: datetime
) -> None:
    """next(t) > t and previous(t) ≤ t are runs; previous(next(t)) = next(t); no run lies between."""
    schedule = _schedule(spec, zone)
    following = schedule.next_after(moment)
    previous = schedule.previous_fire(moment)
    if following is not None:
        assert following > moment
        assert _matches(schedule, following)
        assert schedule.previous_fire(following) == following
        # Nothing between: the latest run just before the next one is the latest run up to t.
        assert schedule.previous_fire(following - timedelta(microseconds=1)) == previous
    if previous is not None:
        assert previous <= moment
        assert _matches(schedule, previous)
        assert schedule.next_after(previous) == following


@settings(max_examples=150, deadline=None)
@given(
    spec=SPECS,
    zone=st.sampled_from(ZONES),
    base=st.sampled_from(TRANSITIONS),
    offset=st.integers(-30 * 3600, 30 * 3600),
)
def test_next_run_is_the_first_matching_minute_near_clock_changes(
    spec: str, zone: str, base: datetime, offset: int
) -> None:
    """Around a clock change, next(t) is the first whole UTC minute after t whose local time matches."""
    schedule = _schedule(spec, zone)
    moment = base + timedelta(seconds=offset)
    candidate = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
    limit = moment + timedelta(hours=30)
    while candidate <= limit and not _matches(schedule, candidate):
        candidate += timedelta(minutes=1)
    following = schedule.next_after(moment)
    if candidate <= limit:
        assert following == candidate
    else:
        assert following is None or following > limit


@settings(max_examples=200, deadline=None)
@given(spec=SPECS, zone=st.sampled_from(ZONES), start=moments(), cutoff=moments())
def test_a_run_is_owed_by_a_cutoff_exactly_when_the_last_run_is_before_its_previous_fire(
    spec: str, zone: str, start: datetime, cutoff: datetime
) -> None:
    """next(last) ≤ cutoff ⇔ last < previous(cutoff): the relay's and the scorecard's tests agree."""
    schedule = _schedule(spec, zone)
    following = schedule.next_after(start)
    previous = schedule.previous_fire(cutoff)
    owed_by_next = following is not None and following <= cutoff
    owed_by_previous = previous is not None and start < previous
    assert owed_by_next == owed_by_previous


def test_moments_at_the_ends_of_the_calendar_have_no_runs_beyond_them() -> None:
    """A last backup stamped 9999-12-31 (or year 1) gives None, not OverflowError."""
    end, start = datetime(9999, 12, 31, 23, 59, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC)
    for spec in ("0 2 * * *", "CRON_TZ=Asia/Tokyo 0 2 * * *", "CRON_TZ=America/New_York 0 2 * * *"):
        assert parse_cron(spec).next_after(end) is None
        assert parse_cron(spec).previous_fire(start) is None
    assert parse_cron("@every 6h").next_after(end) is None
    assert due_by(parse_cron("@every 6h"), end, last_run=end, created=None) == end
