"""Scheduled housekeeping on APScheduler (3.x, asyncio flavour).

Later features (dead-man's switch checks, approval expiry, digests) add their
jobs here, so every timer in the bot is visible in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger

from bot.store.handled import HandledEvents
from config.cron import Schedule

log = logging.getLogger(__name__)

# Handled event ids are kept long after a sync could replay them.
HANDLED_EVENTS_RETENTION_S = 7 * 24 * 3600


def build_scheduler(handled: HandledEvents, clock: Callable[[], float]) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone="UTC")

    async def prune_handled_events() -> None:
        await handled.prune(older_than=clock() - HANDLED_EVENTS_RETENTION_S)

    scheduler.add_job(prune_handled_events, "interval", hours=6, id="prune-handled-events", coalesce=True)
    return scheduler


class CronScheduleTrigger(BaseTrigger):  # type: ignore[misc]
    """An APScheduler trigger firing at the runs of a ``config.cron`` schedule (the one cron reader).

    Like APScheduler's own ``CronTrigger``: the first run at or after ``now``,
    or right after the previous fire time when that is earlier (a late job
    is then a misfire, judged by the job's ``misfire_grace_time``).
    """

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        start = (
            now if previous_fire_time is None else min(now, previous_fire_time + timedelta(microseconds=1))
        )
        return self.schedule.next_after(start - timedelta(microseconds=1))

    def __str__(self) -> str:
        return f"cron[{self.schedule.text!r}]"

    def __repr__(self) -> str:
        return f"<CronScheduleTrigger ({self.schedule.text!r})>"
