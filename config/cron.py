"""The one reading of cron expressions in the bot: robfig/cron v3's standard parser.

Velero (``Schedule.spec.schedule``) and Kubernetes (``CronJob.spec.schedule``)
both read their schedules with robfig/cron v3's ``ParseStandard``; the
readiness probes, the Velero relay and the readiness digest all use this
module, so they agree with each other and with the cluster.

What robfig/cron v3 documents (``doc.go``, ``parser.go``, ``spec.go``), and so
what this module does:

- Five fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12
  or ``jan``-``dec``), day of week (0-6 or ``sun``-``sat``; 0 is Sunday and
  **7 is out of range**). Names are case-insensitive; each field is a
  comma-separated list of ``*``, ``?`` (the same as ``*``), ``N``, ``N-M``,
  with an optional ``/step``; ``N/step`` means ``N-max/step``. Empty list items
  are skipped, as Go's ``strings.FieldsFunc`` does.
- Day of month and day of week: when either field is unrestricted (it has a
  ``*`` or ``?`` item without a step above 1), both must match; when both are
  restricted, either one matching is enough (``0 3 1 * 1``: the 1st *or*
  Mondays).
- An optional ``CRON_TZ=<zone>`` or ``TZ=<zone>`` prefix; otherwise the
  ``timezone`` given (a CronJob's ``spec.timeZone``), else UTC (Velero's
  ``time.Local`` in its container).
- Descriptors, lower case only: ``@yearly``/``@annually``, ``@monthly``,
  ``@weekly``, ``@daily``/``@midnight``, ``@hourly``, and ``@every <Go
  duration>`` (``1h30m``, ``1.5h``, ``90s``; units ns, us, µs, ms, s, m, h),
  truncated to whole seconds and at least one second.
- A run is a whole minute whose wall-clock time in the zone matches. Across a
  daylight-saving change this means what robfig's ``Next`` does: a wall time
  the clocks skip never runs, and one they repeat runs twice.
- An expression no date can satisfy (``0 0 30 2 *``) is accepted and never
  runs: ``next_after``/``previous_fire`` answer ``None``.

``@every`` has no calendar: it runs one interval after the previous run.
``next_after(t)`` is then ``t`` plus the interval (Velero computes a
Schedule's next run from its last backup, or from its creation when there is
none), and ``previous_fire`` is ``None``; ``due_by`` gives the run owed by a
moment for both kinds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from itertools import pairwise
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class CronError(ValueError):
    """An expression robfig/cron (so Velero and Kubernetes) would refuse; the message says why."""


@dataclass(frozen=True)
class _Bounds:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] is the value low + i

    def value(self, text: str) -> int:
        lowered = text.lower()
        if lowered in self.names:
            return self.low + self.names.index(lowered)
        return _number(text, self.name)


def _number(text: str, what: str) -> int:
    """Go's strconv.Atoi (an optional sign, then ASCII digits), refusing negative numbers as robfig does."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise CronError(f"{what}: cannot read {text!r} as a number")
    number = int(text)
    if number < 0:
        raise CronError(f"{what}: negative number {text!r}")
    return number


_MINUTES: Final = _Bounds("minute", 0, 59)
_HOURS: Final = _Bounds("hour", 0, 23)
_DAYS: Final = _Bounds("day of month", 1, 31)
_MONTHS: Final = _Bounds(
    "month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
)
_WEEKDAYS: Final = _Bounds("day of week", 0, 6, ("sun", "mon", "tue", "wed", "thu", "fri", "sat"))

_DESCRIPTORS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_GO_DURATION: Final = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNIT_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
# Days searched for a run: a 29 February with a star weekday comes back within 8 years (2096 → 2104).
_SEARCH_DAYS: Final = 9 * 366
# Days in each month of a leap year: whether a day of month can happen in that month at all.
_MONTH_DAYS: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# The longest gap is measured over this window (and up to the first run after it).
_GAP_WINDOW: Final = timedelta(days=15)


@dataclass(frozen=True)
class CalendarSchedule:
    """A five-field schedule (or a descriptor other than ``@every``) in its zone."""

    text: str
    zone: tzinfo
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    # Both day fields restricted: either matching is enough (else both must match).
    either_day: bool
    # False for an expression no date satisfies (robfig accepts it; its Next gives the zero time).
    runs: bool = True

    @property
    def every(self) -> None:
        return None

    def next_after(self, moment: datetime) -> datetime | None:
        """The first run strictly after ``moment`` (aware), in UTC; None if it never runs."""
        if not self.runs:
            return None
        instant = moment.astimezone(UTC)
        # From two days before the UTC date: the zone's date may differ by one, and clocks set
        # back across midnight can put a day's runs after the next day's first ones.
        day = _shift(instant.date(), -2) or instant.date()
        found: datetime | None = None
        last_day = _shift(day, _SEARCH_DAYS) or date.max
        while day <= last_day:
            try:
                later = [run for run in self._runs_on(day) if run > instant]
            except OverflowError:  # the end of Python's calendar (year 9999)
                break
            if later and (found is None or later[0] < found):
                found = later[0]
                last_day = min(last_day, _shift(day, 1) or day)
            next_day = _shift(day, 1)
            if next_day is None:
                break
            day = next_day
        return found

    def previous_fire(self, moment: datetime) -> datetime | None:
        """The latest run at or before ``moment`` (aware), in UTC; None if there is none."""
        if not self.runs:
            return None
        instant = moment.astimezone(UTC)
        day = _shift(instant.date(), 2) or instant.date()
        found: datetime | None = None
        first_day = _shift(day, -_SEARCH_DAYS) or date.min
        while day >= first_day:
            try:
                earlier = [run for run in self._runs_on(day) if run <= instant]
            except OverflowError:  # the start of Python's calendar (year 1)
                break
            if earlier and (found is None or earlier[-1] > found):
                found = earlier[-1]
                first_day = max(first_day, _shift(day, -1) or day)
            previous_day = _shift(day, -1)
            if previous_day is None:
                break
            day = previous_day
        return found

    def longest_gap(self, now: datetime) -> timedelta | None:
        """The longest time between two runs in a row from ``now`` over two weeks (None: never runs)."""
        first = self.next_after(now - timedelta(microseconds=1))
        if first is None:
            return None
        horizon = now + _GAP_WINDOW
        runs = [first]
        day = first.astimezone(self.zone).date()
        while day <= horizon.astimezone(self.zone).date() + timedelta(days=1):
            runs.extend(run for run in self._runs_on(day) if first < run <= horizon)
            day += timedelta(days=1)
        runs = sorted(set(runs))
        following = self.next_after(runs[-1])
        if following is not None:
            runs.append(following)
        if len(runs) < 2:
            return None
        return max(later - earlier for earlier, later in pairwise(runs))

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        by_date = day.day in self.days
        by_weekday = (day.weekday() + 1) % 7 in self.weekdays
        return (by_date or by_weekday) if self.either_day else (by_date and by_weekday)

    def _runs_on(self, day: date) -> list[datetime]:
        """Every run whose wall-clock date in the zone is ``day``, in UTC, in order."""
        if not self._day_matches(day):
            return []
        midnight = datetime.combine(day, time(0), tzinfo=self.zone)
        next_midnight = datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.zone)
        offset = midnight.utcoffset()
        steady = offset is not None and offset == next_midnight.utcoffset()
        if steady and next_midnight.astimezone(UTC) - midnight.astimezone(UTC) == timedelta(days=1):
            assert offset is not None
            # No clock change that day: one offset for every wall time.
            return [
                (datetime.combine(day, time(hour, minute)) - offset).replace(tzinfo=UTC)
                for hour in self.hours
                for minute in self.minutes
            ]
        runs: set[datetime] = set()
        for hour in self.hours:
            for minute in self.minutes:
                wall = datetime.combine(day, time(hour, minute))
                for fold in (0, 1):
                    instant = wall.replace(tzinfo=self.zone, fold=fold).astimezone(UTC)
                    # A wall time the clocks skip does not come back from UTC: it never runs.
                    if instant.astimezone(self.zone).replace(tzinfo=None) == wall:
                        runs.add(instant)
        return sorted(runs)


@dataclass(frozen=True)
class EverySchedule:
    """``@every <duration>``: a run one ``interval`` after the previous one, whatever the calendar says."""

    text: str
    interval: timedelta

    @property
    def every(self) -> timedelta:
        return self.interval

    def next_after(self, moment: datetime) -> datetime | None:
        """``moment`` (to the second, as robfig) plus the interval, in UTC; None past year 9999."""
        try:
            return moment.astimezone(UTC).replace(microsecond=0) + self.interval
        except OverflowError:
            return None

    def previous_fire(self, moment: datetime) -> None:
        """None: without a last run there are no fixed times to go back to (see ``due_by``)."""
        return

    def longest_gap(self, now: datetime) -> timedelta:
        return self.interval


Schedule = CalendarSchedule | EverySchedule


def parse_cron(expression: str, timezone: tzinfo | str = "UTC") -> Schedule:
    """Read a schedule as robfig/cron v3's standard parser does; ``CronError`` says what is wrong.

    ``timezone`` is the zone when the expression has no ``CRON_TZ=``/``TZ=``
    prefix (a CronJob's ``spec.timeZone``).
    """
    text = expression.strip()
    if not text:
        raise CronError("the schedule is empty")
    zone = _zone(timezone) if isinstance(timezone, str) else timezone
    if text.startswith(("TZ=", "CRON_TZ=")):
        prefix, space, rest = text.partition(" ")
        if not space:
            raise CronError(f"nothing follows the zone prefix {prefix!r}")
        zone = _zone(prefix.split("=", 1)[1])
        text = rest.strip()
    if text.startswith("@"):
        if text.startswith("@every "):
            return EverySchedule(expression.strip(), _every(text.removeprefix("@every ")))
        if text not in _DESCRIPTORS:
            raise CronError(
                f"unknown descriptor {text!r} (@yearly, @monthly, @weekly, @daily, @hourly, @every …)"
            )
        text = _DESCRIPTORS[text]
    fields = text.split()
    if len(fields) != 5:
        raise CronError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), found {len(fields)}"
        )
    minutes, _ = _field(fields[0], _MINUTES)
    hours, _ = _field(fields[1], _HOURS)
    days, day_star = _field(fields[2], _DAYS)
    months, _ = _field(fields[3], _MONTHS)
    weekdays, weekday_star = _field(fields[4], _WEEKDAYS)
    return CalendarSchedule(
        text=expression.strip(),
        zone=zone,
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(weekdays),
        either_day=not (day_star or weekday_star),
        runs=_can_run(minutes, hours, days, months, weekdays, either_day=not (day_star or weekday_star)),
    )


def _can_run(
    minutes: set[int],
    hours: set[int],
    days: set[int],
    months: set[int],
    weekdays: set[int],
    *,
    either_day: bool,
) -> bool:
    """Whether some date satisfies the fields (30 February does not; 29 February does, in leap years)."""
    if not (minutes and hours and months):
        return False
    if either_day:
        return bool(days or weekdays)
    return bool(weekdays) and any(day <= _MONTH_DAYS[month - 1] for month in months for day in days)


def due_by(
    schedule: Schedule, cutoff: datetime, *, last_run: datetime | None, created: datetime | None
) -> datetime | None:
    """The latest run that should have started by ``cutoff``; None when none was due yet.

    A calendar schedule: its previous fire at or before ``cutoff``. ``@every``:
    runs are anchored on the last run (or, before the first one, on the
    creation), as Velero counts them: if the next run after that anchor is
    due by ``cutoff`` it is the one owed; else the last run itself is the
    latest that was due (so a last run at or after it passes).
    """
    if isinstance(schedule, CalendarSchedule):
        return schedule.previous_fire(cutoff)
    anchor = last_run if last_run is not None else created
    if anchor is None:
        return None
    owed = schedule.next_after(anchor)
    if owed is not None and owed <= cutoff:
        return owed
    return last_run


def _shift(day: date, days: int) -> date | None:
    """``day`` moved by ``days``, or None outside Python's calendar (years 1-9999)."""
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return None


def _zone(name: str) -> tzinfo:
    # Go's time.LoadLocation: "" and "UTC" are UTC; "Local" is the process's zone, UTC in Velero's container.
    if name in ("", "UTC", "Local"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name!r}") from None


def _field(text: str, bounds: _Bounds) -> tuple[set[int], bool]:
    """The values a field allows, and whether it is unrestricted (robfig's star bit)."""
    values: set[int] = set()
    star = False
    for item in (part for part in text.split(",") if part):
        item_values, item_star = _item(item, bounds)
        values |= item_values
        star = star or item_star
    return values, star


def _item(item: str, bounds: _Bounds) -> tuple[set[int], bool]:
    range_and_step = item.split("/")
    if len(range_and_step) > 2:
        raise CronError(f"{bounds.name}: too many slashes in {item!r}")
    low_high = range_and_step[0].split("-")
    star = False
    if low_high[0] in ("*", "?"):
        first, last, star = bounds.low, bounds.high, True
    else:
        if len(low_high) > 2:
            raise CronError(f"{bounds.name}: too many hyphens in {item!r}")
        first = bounds.value(low_high[0])
        last = bounds.value(low_high[1]) if len(low_high) == 2 else first
    step = 1
    if len(range_and_step) == 2:
        step = _number(range_and_step[1], f"{bounds.name} step")
        if len(low_high) == 1:
            last = bounds.high  # "N/step" is "N-max/step"
        if step > 1:
            star = False
    if first < bounds.low:
        raise CronError(f"{bounds.name}: {first} is below the minimum {bounds.low} in {item!r}")
    if last > bounds.high:
        raise CronError(f"{bounds.name}: {last} is above the maximum {bounds.high} in {item!r}")
    if first > last:
        raise CronError(f"{bounds.name}: the range {item!r} runs backwards")
    if step == 0:
        raise CronError(f"{bounds.name}: the step of {item!r} must be positive")
    return set(range(first, last + 1, step)), star


def _every(text: str) -> timedelta:
    """A Go duration (Go's time.ParseDuration), truncated to whole seconds and at least one second."""
    body = text[1:] if text[:1] in ("+", "-") else text
    negative = text.startswith("-")
    if body == "0":
        nanoseconds = 0
    else:
        parts = _GO_DURATION.findall(body)
        if not body or "".join(number + unit for number, unit in parts) != body:
            raise CronError(f"cannot read the duration {text!r} after @every (e.g. 1h30m, 90s)")
        nanoseconds = 0
        for number, unit in parts:
            if number in ("", "."):
                raise CronError(f"cannot read the duration {text!r} after @every (e.g. 1h30m, 90s)")
            whole, _, fraction = number.partition(".")
            scale = _GO_UNIT_NS[unit]
            nanoseconds += int(whole or "0") * scale
            if fraction:
                nanoseconds += int(fraction) * scale // 10 ** len(fraction)
    if negative:
        nanoseconds = -nanoseconds
    seconds = max(1, nanoseconds // 10**9) if nanoseconds >= 10**9 else 1
    return timedelta(seconds=seconds)
