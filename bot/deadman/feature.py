"""Wiring of the dead-man's switch and of silences from chat.

Builds the ``DeadmansSwitch`` (always, so the relay can recognise heartbeats
even when the switch is off), its scheduled check, the second channel's
delivery task and the optional self-ping; and, when ``alertmanager.api_url``
is set, the API client, the ``SilenceService`` the commands use and the 🔕
reaction handler. Must be built before the Alertmanager relay, which finds
the switch in the extensions.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.alertmanager.api import AlertmanagerApi
from bot.alertmanager.reaction import AlertGroupLookup, AlertGroupView, SilenceReactionHandler
from bot.alertmanager.silences import SilenceService
from bot.alertmanager.store import AlertGroupRepo
from bot.deadman.channels import HttpNoticeChannel, SelfPing
from bot.deadman.switch import DeadmanMetrics, DeadmansSwitch
from bot.features import FeatureContext, FeatureParts
from bot.outbox import EventRef
from bot.store.handled import HandledEvents

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
    )
    ctx.extensions.put(DeadmansSwitch, switch)
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
    _add_silences(ctx, parts, switch)
    return parts


def _add_silences(ctx: FeatureContext, parts: FeatureParts, switch: DeadmansSwitch) -> None:
    alertmanager = ctx.settings.alertmanager
    if alertmanager.api_url is None:
        return
    api = AlertmanagerApi(str(alertmanager.api_url), timeout_s=alertmanager.api_timeout_s)
    ctx.extensions.put(AlertmanagerApi, api)
    service = SilenceService(
        api,
        ctx.audit,
        clock=ctx.clock,
        is_heartbeat=switch.is_heartbeat,
        default_duration=alertmanager.silence_default_duration,
        max_duration=alertmanager.silence_max_duration,
        prefix=ctx.settings.matrix.command_prefix,
    )
    ctx.extensions.put(SilenceService, service)
    parts.reaction_handlers.append(
        SilenceReactionHandler(
            service,
            groups=lambda: _alert_groups(ctx),
            thread_root=_thread_root,
            outbox=ctx.outbox,
            templates=ctx.templates,
            authorizer=ctx.authorizer,
            permissions=ctx.settings.permissions,
            handled=HandledEvents(ctx.db),
            audit=ctx.audit,
            prefix=ctx.settings.matrix.command_prefix,
        )
    )


def _alert_groups(ctx: FeatureContext) -> AlertGroupLookup | None:
    """The relay's group repository, looked up when a reaction arrives (the relay is built after us).

    None while the relay is off: then no message is an alert group. The
    repository reads the relay's tables only, so one over our own
    connection serves if the relay did not publish its own.
    """
    if not ctx.settings.alertmanager.enabled:
        return None
    return ctx.extensions.find(AlertGroupRepo) or AlertGroupRepo(ctx.db)


def _thread_root(group: AlertGroupView) -> EventRef | None:
    root = getattr(group, "thread_root", None)
    return root if isinstance(root, str) else None


def _logged(job: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    """A scheduler job that logs its own failure and lives on to the next tick."""

    async def run() -> None:
        try:
            await job()
        except Exception:
            log.exception("deadman: the scheduled check failed; retrying at the next tick")

    return run
