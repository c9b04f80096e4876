"""Wiring of the dead-man's switch.

Builds the ``DeadmansSwitch`` (always, so the Alertmanager relay and the
silences recognise heartbeats even when the switch is off), its scheduled
check, the second channel's delivery task and the optional self-ping. Must be
built before the Alertmanager feature, which finds the switch in the
extensions as ``bot.heartbeats.Heartbeats``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.deadman.channels import HttpNoticeChannel, SelfPing
from bot.deadman.switch import DeadmanMetrics, DeadmansSwitch
from bot.features import FeatureContext, FeatureParts
from bot.heartbeats import Heartbeats

log = logging.getLogger(__name__)

CHECK_JOB_ID = "deadman-check"


async def deadman_feature(ctx: FeatureContext) -> FeatureParts:
    settings = ctx.settings.deadman
    parts = FeatureParts()
    channel = HttpNoticeChannel(settings.secondary) if settings.secondary.url is not None else None
    rooms = settings.rooms or ctx.settings.alertmanager.default_rooms
    switch = DeadmansSwitch(
        settings,
        db=ctx.db,
        outbox=ctx.outbox,
        templates=ctx.templates,
        rooms=rooms,
        clock=ctx.clock,
        # Webhooks are served from just after the features are built: the
        # switch counts silence from here (see bot.deadman.switch, restart rule).
        started_at=ctx.clock(),
        channel=channel,
        metrics=DeadmanMetrics(ctx.metrics.registry),
        fence=ctx.fence,
    )
    ctx.extensions.put(DeadmansSwitch, switch)
    ctx.extensions.put(Heartbeats, Heartbeats(switch))
    if settings.enabled:
        # Only worth a warning where heartbeats can arrive at all.
        if ctx.settings.alertmanager.enabled or settings.expected_sources:
            if not rooms:
                log.warning("deadman: no alarm rooms (deadman.rooms, alertmanager.default_rooms)")
            if channel is None:
                log.warning("deadman: no second channel (deadman.secondary.url): alarms go to Matrix only")
        await switch.watch_expected()
        ctx.scheduler.add_job(
            _logged(switch.check),
            "interval",
            seconds=settings.check_interval_s,
            id=CHECK_JOB_ID,
            coalesce=True,
            max_instances=1,
            # A late check is still worth running; never skip it.
            misfire_grace_time=None,
        )
        parts.root_tasks.append(switch.run_secondary)
    if settings.self_ping.url is not None:
        parts.root_tasks.append(SelfPing(settings.self_ping, switch.healthy, ctx.clock).run)
    return parts


def _logged(job: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    """A scheduler job that logs its own failure and lives on to the next tick."""

    async def run() -> None:
        try:
            await job()
        except Exception:
            log.exception("deadman: the scheduled check failed; retrying at the next tick")

    return run
