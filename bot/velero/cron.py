"""When a Velero schedule is expected to run, computed with APScheduler's ``CronTrigger``.

Velero reads ``spec.schedule`` with robfig/cron's standard parser: five
fields (minute hour day-of-month month day-of-week), the descriptors
``@hourly``, ``@daily``/``@midnight``, ``@weekly``, ``@monthly``,
``@yearly``/``@annually`` and ``@every <Go duration>``, and an optional
``CRON_TZ=<zone>`` (or ``TZ=``) prefix; times are UTC otherwise. Two
differences from APScheduler's own crontab reading are bridged here:

- Day-of-week numbers: cron's 0 is Sunday, APScheduler 3's is Monday. The
  field is rewritten with day names (``sun``…``sat``), which mean the same to both.
- Day-of-month *and* day-of-week both restricted: cron runs when *either*
  matches, APScheduler when both do. Such a schedule becomes two triggers
  (one per field) and the earlier fire time wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

_DESCRIPTORS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DAY_NAMES: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_TERM: Final = re.compile(r"^(?P<base>\*|\?|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>\d+))?$")
_GO_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS_S: Final = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class CronError(ValueError):
    """A schedule expression the relay (and most likely Velero) cannot read; the message says why."""


class RunSchedule(Protocol):
    """When a schedule runs next."""

    @property
    def text(self) -> str: ...

    def next_after(self, moment: datetime) -> datetime:
        """The first run strictly after ``moment`` (timezone-aware), in UTC."""
        ...


@dataclass(frozen=True)
class CronSchedule:
    text: str
    # Triggers whose earliest next fire time is the schedule's (see the module docstring).
    triggers: tuple[Any, ...]

    def next_after(self, moment: datetime) -> datetime:
        # CronTrigger answers "at or after", rounded up to the second; one
        # microsecond later makes it "strictly after".
        start = moment.astimezone(UTC) + timedelta(microseconds=1)
        times = [trigger.get_next_fire_time(None, start) for trigger in self.triggers]
        found = [time for time in times if time is not None]
        if not found:
            # Only a date that never comes (31 February) gets here.
            raise CronError("the schedule never fires")
        earliest: datetime = min(found)
        return earliest.astimezone(UTC)


@dataclass(frozen=True)
class EverySchedule:
    """``@every <duration>``: robfig/cron runs it ``interval`` after the last run, to the second."""

    text: str
    interval: timedelta

    def next_after(self, moment: datetime) -> datetime:
        return moment.astimezone(UTC).replace(microsecond=0) + self.interval


def parse_schedule_expression(expression: str) -> RunSchedule:
    """A Velero ``spec.schedule`` as a ``RunSchedule``; ``CronError`` when it cannot be read."""
    text = " ".join(expression.split())
    if not text:
        raise CronError("the schedule is empty")
    zone: tzinfo = UTC
    if text.startswith(("CRON_TZ=", "TZ=")):
        prefix, _, text = text.partition(" ")
        zone = _zone(prefix.split("=", 1)[1])
    lowered = text.lower()
    if lowered.startswith("@every"):
        return EverySchedule(expression.strip(), _go_duration(lowered.removeprefix("@every").strip()))
    fields = _DESCRIPTORS.get(lowered, lowered).split()
    if len(fields) != 5:
        raise CronError(f"expected 5 fields (minute hour day month weekday), found {len(fields)}")
    minute, hour, day, month, weekday = fields
    day, day_star = _plain_field(day)
    weekday_names, weekday_star = _weekday_field(weekday)
    common = {
        "minute": _plain_field(minute)[0],
        "hour": _plain_field(hour)[0],
        "month": _plain_field(month)[0],
    }
    if day_star or weekday_star:
        shapes = [{"day": day, "day_of_week": weekday_names}]
    else:
        shapes = [{"day": day, "day_of_week": "*"}, {"day": "*", "day_of_week": weekday_names}]
    try:
        triggers = tuple(CronTrigger(**common, **shape, timezone=zone) for shape in shapes)
    except ValueError as error:
        raise CronError(str(error)) from None
    return CronSchedule(expression.strip(), triggers)


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name!r}") from None


def _terms(field: str) -> list[re.Match[str]]:
    matches = [_TERM.match(term) for term in field.split(",")]
    if not all(matches):
        raise CronError(f"cannot read the field {field!r}")
    return [match for match in matches if match is not None]


def _is_star(term: re.Match[str]) -> bool:
    # robfig/cron: "*" and "?" are unrestricted, and so is "*/1"; "*/2" is not.
    return term["base"] in ("*", "?") and term["step"] in (None, "1")


def _plain_field(field: str) -> tuple[str, bool]:
    """A field APScheduler reads as cron does ("?" is cron's "*"); and whether it is unrestricted."""
    terms = _terms(field)
    star = any(_is_star(term) for term in terms)
    return field.replace("?", "*"), star


def _weekday_field(field: str) -> tuple[str, bool]:
    """The day-of-week field with day names instead of cron's numbers (0 and 7 are Sunday)."""
    terms = _terms(field)
    if any(_is_star(term) for term in terms):
        return "*", True
    days: set[int] = set()
    for term in terms:
        base, step = term["base"], int(term["step"] or 1)
        if step < 1:
            raise CronError("a step must be at least 1")
        if base in ("*", "?"):
            first, last = 0, 6
        else:
            low, _, high = base.partition("-")
            first = _weekday(low)
            # "N/step" means "N-max/step", as in robfig/cron.
            last = _weekday(high) if high else (6 if term["step"] else first)
            if high and last == 0 and first > 0:
                last = 7  # "fri-sun": Sunday at the end of a range is day 7
        if last < first:
            raise CronError(f"the range {base!r} runs backwards")
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(_DAY_NAMES[day] for day in sorted(days)), False


def _weekday(value: str) -> int:
    if value.isdigit():
        number = int(value)
        if number > 7:
            raise CronError(f"day of week {number} is out of range 0-7")
        return number
    if value[:3] in _DAY_NAMES and len(value) == 3:
        return _DAY_NAMES.index(value)
    raise CronError(f"unknown day of week {value!r}")


def _go_duration(text: str) -> timedelta:
    """A Go duration (``1h30m``, ``90m``, ``1.5h``); robfig/cron rounds it down to whole seconds."""
    if not text or _GO_DURATION_PART.sub("", text):
        raise CronError(f"cannot read the duration {text!r} after @every")
    seconds = sum(float(amount) * _GO_UNITS_S[unit] for amount, unit in _GO_DURATION_PART.findall(text))
    if seconds < 1:
        raise CronError("@every needs at least one second")
    return timedelta(seconds=int(seconds))
