"""Wiring of the readiness scorecard: the plan, the probes' reach, the store, the weekly digest.

Built last: it looks up what the features before it provide — the
``KubeApi`` (Kubernetes feature), the ``DeadmansSwitch`` and the
``AlertmanagerApi`` (dead-man's switch feature). A plan file that does not
validate stops the start (exit 78), as an invalid configuration does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bot.alertmanager.api import AlertmanagerApi
from bot.deadman.switch import DeadmansSwitch
from bot.features import FeatureContext, FeatureParts
from bot.readiness.probes import ProbeEnv
from bot.readiness.prometheus import PrometheusApi
from bot.readiness.render import digest_message
from bot.readiness.service import ReadinessService
from bot.readiness.store import ReadinessRepo
from bot.scheduling import CronScheduleTrigger
from config.approvals import application_name
from config.cron import parse_cron
from config.readiness_plan import load_plan

if TYPE_CHECKING:
    from bot.kube.client import KubeApi
    from bot.readiness.self_probes import DrillHistory
    from config.settings import Settings

log = logging.getLogger(__name__)

DIGEST_JOB_ID = "readiness-digest"
# A digest missed while the bot was down is still posted within this long.
_DIGEST_MISFIRE_GRACE_S = 6 * 3600


async def readiness_feature(ctx: FeatureContext) -> FeatureParts:
    settings = ctx.settings.readiness
    plan = await asyncio.to_thread(load_plan, settings.plan_path)
    kube = _kube(ctx)
    if kube is None:
        log.warning("readiness: kubernetes.enabled is off; the cluster criteria will be unknown")
    prometheus = (
        PrometheusApi(str(settings.prometheus_url), timeout_s=settings.probe_timeout_s)
        if settings.prometheus_url is not None
        else None
    )
    alertmanager = (
        AlertmanagerApi(str(settings.alertmanager_url), timeout_s=settings.probe_timeout_s)
        if settings.alertmanager_url is not None
        else ctx.extensions.find(AlertmanagerApi)
    )
    watchdog = ctx.extensions.find(DeadmansSwitch)
    drills = _drills(ctx)
    gated = gated_applications(ctx.settings)

    def environment() -> ProbeEnv:
        # A fresh environment per run: its request cache lives as long as the run.
        return ProbeEnv(
            kube=kube,
            prometheus=prometheus,
            alertmanager=alertmanager,
            watchdog=watchdog,
            gated_apps=gated,
            drills=drills,
            clock=ctx.clock,
        )

    service = ReadinessService(
        plan, settings, env_factory=environment, clock=ctx.clock, repo=ReadinessRepo(ctx.db)
    )
    ctx.extensions.put(ReadinessService, service)
    _schedule_digest(ctx, service)
    log.info(
        "readiness: %d criteria in %d phases from %s",
        len(plan.criteria()),
        len(plan.phases),
        settings.plan_path,
    )
    return FeatureParts()


def gated_applications(settings: Settings) -> frozenset[str]:
    """The Argo CD Applications readybot's approval gates cover."""
    return frozenset(application_name(name, app) for name, app in settings.approvals.apps.items())


def _drills(ctx: FeatureContext) -> DrillHistory | None:
    if not (ctx.settings.velero.enabled and ctx.settings.velero.drills.enabled):
        return None
    # Imported only here, like the kubernetes client: drills need a cluster.
    from bot.drills.service import DrillService

    return ctx.extensions.find(DrillService)


def _kube(ctx: FeatureContext) -> KubeApi | None:
    if not ctx.settings.kubernetes.enabled:
        return None
    # Imported only here: without a cluster the kubernetes client is never loaded.
    from bot.kube.client import KubeApi

    return ctx.extensions.find(KubeApi)


def _schedule_digest(ctx: FeatureContext, service: ReadinessService) -> None:
    settings = ctx.settings.readiness
    if settings.digest_schedule is None:
        return
    if not settings.rooms:
        log.warning("readiness: no rooms (readiness.rooms): the digest is not posted")
        return
    prefix = ctx.settings.matrix.command_prefix

    async def post_digest() -> None:
        try:
            report = await service.run("digest")
            message = digest_message(ctx.templates, report, prefix)
            for room in settings.rooms:
                await ctx.outbox.send_message(room, message.content())
        except Exception:
            log.exception("readiness: the digest failed; trying again at its next time")

    ctx.scheduler.add_job(
        post_digest,
        CronScheduleTrigger(parse_cron(settings.digest_schedule, settings.timezone)),
        id=DIGEST_JOB_ID,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=_DIGEST_MISFIRE_GRACE_S,
    )
