"""Wiring of restore drills: the drill kind into the approval machinery, the runner, the scheduled drill.

Built after the approvals feature (whose ``ApprovalService`` posts the
prompts and counts the votes) and the Kubernetes feature (whose ``KubeApi``
writes the scratch namespaces and the Restore).
"""

from __future__ import annotations

import logging

from bot.approvals.service import ApprovalService
from bot.drills.service import DrillDeps, DrillMetrics, DrillService
from bot.errors import ConfigError
from bot.features import FeatureContext, FeatureParts
from bot.kube.client import KubeApi
from bot.scheduling import CronScheduleTrigger
from config.base import PermissionRule
from config.cron import parse_cron

log = logging.getLogger(__name__)

SCHEDULE_JOB_ID = "velero-restore-drill"
# A scheduled drill missed while the bot was down still runs within this long.
_MISFIRE_GRACE_S = 6 * 3600


async def drills_feature(ctx: FeatureContext) -> FeatureParts:
    settings = ctx.settings.velero
    api = ctx.extensions.find(KubeApi)
    approvals = ctx.extensions.find(ApprovalService)
    if api is None or approvals is None:
        raise ConfigError(["velero.drills.enabled: needs kubernetes.enabled and velero.enabled"])

    async def allowed(user_id: str, room_id: str, rule: PermissionRule) -> bool:
        return (await ctx.authorizer.check(user_id, room_id, rule)).allowed

    service = DrillService(
        DrillDeps(
            settings=settings,
            prefix=ctx.settings.matrix.command_prefix,
            db=ctx.db,
            outbox=ctx.outbox,
            templates=ctx.templates,
            kube=api,
            approvals=approvals,
            allowed=allowed,
            metrics=DrillMetrics(ctx.metrics.registry),
            clock=ctx.clock,
            bot_user_id=ctx.bot_user_id,
        )
    )
    approvals.register_kind(service.kind)
    ctx.extensions.put(DrillService, service)

    async def on_ready() -> None:
        # After the approvals feature's catch-up: drills approved or started
        # before a restart go on where they were.
        await service.runner.resume()
        if settings.drills.schedule is not None:
            ctx.scheduler.add_job(
                scheduled,
                CronScheduleTrigger(parse_cron(settings.drills.schedule)),
                id=SCHEDULE_JOB_ID,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=_MISFIRE_GRACE_S,
                replace_existing=True,
            )

    async def scheduled() -> None:
        try:
            await service.scheduled()
        except Exception:
            log.exception("restore drills: the scheduled drill failed; trying again at its next time")

    log.info(
        "restore drills: on%s", f", scheduled {settings.drills.schedule}" if settings.drills.schedule else ""
    )
    return FeatureParts(root_tasks=[service.runner.run], on_ready=[on_ready])
