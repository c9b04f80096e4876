"""Scheduled housekeeping on APScheduler (3.x, asyncio flavour).

Later features (dead-man's switch checks, approval expiry, digests) add their
jobs here, so every timer in the bot is visible in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.store.handled import HandledEvents

log = logging.getLogger(__name__)

# Handled event ids are kept long after a sync could replay them.
HANDLED_EVENTS_RETENTION_S = 7 * 24 * 3600


def build_scheduler(handled: HandledEvents, clock: Callable[[], float]) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone="UTC")

    async def prune_handled_events() -> None:
        await handled.prune(older_than=clock() - HANDLED_EVENTS_RETENTION_S)

    scheduler.add_job(prune_handled_events, "interval", hours=6, id="prune-handled-events", coalesce=True)
    return scheduler
