"""Cron expressions as Kubernetes, Velero and crontab read them, evaluated with APScheduler.

APScheduler 3's ``CronTrigger.from_crontab`` keeps the day-of-week field as
it is, but numbers weekdays from Monday (0 = Monday), while cron numbers them
from Sunday (0 and 7 = Sunday): ``0 3 * * 0`` would fire on Mondays. So the
field is translated to day names first. The ``@daily``-style macros are
expanded, and Velero's ``@every 6h`` is a plain interval.

One difference remains: when both day-of-month and day-of-week are
restricted, cron fires when either matches, APScheduler when both do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from apscheduler.triggers.cron import CronTrigger

from config.durations import parse_duration

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# APScheduler's names, indexed by cron's weekday number (0 = Sunday).
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DOW_TOKEN = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")
# Upper bounds of the searches below: a minutely schedule needs at most this many steps.
_MAX_STEPS = 2_000


def _day_number(text: str) -> int:
    if text.isdigit():
        number = int(text)
        if not 0 <= number <= 7:
            raise ValueError(f"day of week {number} is out of range (0-7)")
        return number % 7
    if text[:3] in _DAY_NAMES:
        return _DAY_NAMES.index(text[:3])
    raise ValueError(f"unknown day of week {text!r}")


def _translate_day_of_week(field: str) -> str:
    """Cron's day-of-week field (0/7 = Sunday) as APScheduler day names."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for token in field.lower().split(","):
        match = _DOW_TOKEN.fullmatch(token)
        if match is None:
            raise ValueError(f"cannot read the day of week {field!r}")
        span, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError("a step must be at least 1")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            start, end = span.split("-")
            first, last = _day_number(start), _day_number(end)
            if end.isdigit() and int(end) == 7:
                last = 7  # "5-7" is Friday to Sunday
        else:
            first = last = _day_number(span)
            if step_text:
                last = 6  # "1/2": from Monday on, every second day
        if last < first:
            raise ValueError(f"day-of-week range {span!r} runs backwards")
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(_DAY_NAMES[day] for day in sorted(days))


@dataclass(frozen=True)
class CronSchedule:
    """A schedule that can say when it last fired and how far apart its runs are."""

    expression: str
    trigger: CronTrigger | None
    # Velero's "@every 6h": runs that far apart, anchored at the last run.
    every: timedelta | None = None

    def previous_fire(self, now: datetime) -> datetime | None:
        """The latest planned run at or before ``now`` (None for ``@every``: no fixed times)."""
        if self.trigger is None:
            return None
        for window in (timedelta(hours=2), timedelta(days=2), timedelta(days=9), timedelta(days=367)):
            latest: datetime | None = None
            moment: datetime | None = self.trigger.get_next_fire_time(None, now - window)
            steps = 0
            while moment is not None and moment <= now and steps < _MAX_STEPS:
                latest = moment
                moment = self.trigger.get_next_fire_time(moment, moment + timedelta(seconds=1))
                steps += 1
            if latest is not None:
                return latest
        return None

    def longest_gap(self, now: datetime) -> timedelta | None:
        """The longest time between two consecutive runs over the next weeks (None if it never runs)."""
        if self.every is not None:
            return self.every
        assert self.trigger is not None
        gap = timedelta(0)
        moment = self.trigger.get_next_fire_time(None, now)
        if moment is None:
            return None
        horizon = now + timedelta(days=15)
        for _ in range(_MAX_STEPS):
            following = self.trigger.get_next_fire_time(moment, moment + timedelta(seconds=1))
            if following is None:
                break
            gap = max(gap, following - moment)
            if following > horizon:
                break
            moment = following
        return gap


def parse_cron(expression: str, timezone: tzinfo | str = "UTC") -> CronSchedule:
    """Read a cron expression (five fields, a macro, or Velero's ``@every <duration>``).

    Raises ``ValueError`` saying what is wrong.
    """
    text = " ".join(expression.split())
    if text.startswith("@every "):
        return CronSchedule(text, None, every=parse_duration(text.removeprefix("@every ").replace(" ", "")))
    text = _MACROS.get(text.lower(), text)
    fields = text.split(" ")
    if len(fields) != 5:
        raise ValueError("a cron expression has five fields: minute hour day-of-month month day-of-week")
    minute, hour, day, month, day_of_week = fields
    trigger = CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_translate_day_of_week(day_of_week),
        timezone=timezone,
    )
    return CronSchedule(expression, trigger)


def cron_trigger(expression: str, timezone: tzinfo | str = "UTC") -> CronTrigger:
    """An APScheduler trigger firing as cron would (for the bot's own scheduled jobs)."""
    schedule = parse_cron(expression, timezone)
    if schedule.trigger is None:
        raise ValueError("use a five-field cron expression here, not @every")
    return schedule.trigger
