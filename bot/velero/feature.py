"""Wiring of the Velero relay: four watches, the periodic check, the daily digest, ``!backups``.

Built after the Kubernetes feature, whose ``KubeApi`` it follows Velero's
namespace with. An unreachable cluster or a missing Velero CRD never stops
the bot: each watch logs it, backs off and retries, and ``!backups`` says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC

from apscheduler.triggers.cron import CronTrigger

from bot.errors import ConfigError
from bot.features import FeatureContext, FeatureParts, RootTask
from bot.kube.client import KubeApi
from bot.kube.resources import (
    VELERO_BACKUP_STORAGE_LOCATIONS,
    VELERO_BACKUPS,
    VELERO_RESTORES,
    VELERO_SCHEDULES,
    ResourceType,
)
from bot.kube.watch import EventHandler, RelistHandler, WatchStatus, watch_resource
from bot.velero.service import BACKUPS, LOCATIONS, RESTORES, SCHEDULES, VeleroService

log = logging.getLogger(__name__)

CHECK_JOB_ID = "velero-check"
DIGEST_JOB_ID = "velero-digest"


async def velero_feature(ctx: FeatureContext) -> FeatureParts:
    settings = ctx.settings.velero
    api = ctx.extensions.find(KubeApi)
    if not ctx.settings.kubernetes.enabled or api is None:
        raise ConfigError(["velero.enabled: needs kubernetes.enabled"])
    service = VeleroService(settings, db=ctx.db, outbox=ctx.outbox, templates=ctx.templates, clock=ctx.clock)
    ctx.extensions.put(VeleroService, service)
    parts = FeatureParts(root_tasks=watch_tasks(api, service))
    ctx.scheduler.add_job(
        _logged(service.check, "check"),
        "interval",
        seconds=settings.check_interval_s,
        id=CHECK_JOB_ID,
        coalesce=True,
        max_instances=1,
        # A late check is still worth running; never skip it.
        misfire_grace_time=None,
    )
    if settings.completed == "digest":
        hour, minute = settings.digest_hour_minute
        ctx.scheduler.add_job(
            _logged(service.post_digest, "digest"),
            CronTrigger(hour=hour, minute=minute, timezone=UTC),
            id=DIGEST_JOB_ID,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
    log.info(
        "velero: following namespace %s, reporting to %d room(s)", settings.namespace, len(service.rooms)
    )
    return parts


def watch_tasks(api: KubeApi, service: VeleroService) -> list[RootTask]:
    """One list-then-watch loop per kind feeding the service; their health goes to ``service.statuses``."""
    watches: list[tuple[ResourceType, str, EventHandler, RelistHandler]] = [
        (VELERO_BACKUPS, BACKUPS, service.backup_changed, service.backups_listed),
        (VELERO_RESTORES, RESTORES, service.restore_changed, service.restores_listed),
        (VELERO_SCHEDULES, SCHEDULES, service.schedule_changed, service.schedules_listed),
        (VELERO_BACKUP_STORAGE_LOCATIONS, LOCATIONS, service.location_changed, service.locations_listed),
    ]
    tasks = []
    for resource, name, on_event, on_relist in watches:
        status = WatchStatus()
        service.statuses[name] = status
        tasks.append(_watch(api, resource, service.namespace, on_event, on_relist, status))
    return tasks


def _watch(
    api: KubeApi,
    resource: ResourceType,
    namespace: str,
    on_event: EventHandler,
    on_relist: RelistHandler,
    status: WatchStatus,
) -> RootTask:
    async def run(stop: asyncio.Event) -> None:
        # Returns once stop is set; an unreachable cluster or a missing CRD is
        # retried with back-off inside, never raised.
        await watch_resource(api, *resource, namespace, on_event, stop, on_relist=on_relist, status=status)

    # The root task's name (bot.app names each after its coroutine): which watch died.
    run.__qualname__ = f"velero_watch[{on_event.__name__}]"
    return run


def _logged(job: Callable[[], Awaitable[object]], what: str) -> Callable[[], Awaitable[None]]:
    """A scheduler job that logs its own failure and lives on to the next tick."""

    async def run() -> None:
        try:
            await job()
        except Exception:
            log.exception("velero: the scheduled %s failed; retrying at the next tick", what)

    return run
