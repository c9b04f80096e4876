"""The approval-gates feature: wires the service into reactions, redactions, the scheduler and start-up."""

from __future__ import annotations

import logging

from bot.approvals.argocd import KubeArgoApplications
from bot.approvals.service import ApprovalDeps, ApprovalService
from bot.errors import ConfigError
from bot.features import FeatureContext, FeatureParts
from bot.kube.client import KubeApi
from config.base import PermissionRule

log = logging.getLogger(__name__)

EXPIRY_JOB_ID = "approvals-expiry"


async def approvals_feature(ctx: FeatureContext) -> FeatureParts:
    api = ctx.extensions.find(KubeApi)
    if api is None:
        # Gated apps without cluster access would answer every !sync with an
        # error; say so at start-up instead.
        raise ConfigError(["approvals.apps: approval gates need kubernetes.enabled: true"])

    async def allowed(user_id: str, room_id: str, rule: PermissionRule) -> bool:
        return (await ctx.authorizer.check(user_id, room_id, rule)).allowed

    service = ApprovalService(
        ApprovalDeps(
            settings=ctx.settings.approvals,
            prefix=ctx.settings.matrix.command_prefix,
            db=ctx.db,
            outbox=ctx.outbox,
            audit=ctx.audit,
            templates=ctx.templates,
            argo=KubeArgoApplications(api),
            allowed=allowed,
            clock=ctx.clock,
            bot_user_id=ctx.bot_user_id,
            fence=ctx.fence,
        )
    )
    ctx.extensions.put(ApprovalService, service)

    async def on_reaction(
        room_id: str, sender: str, target_event_id: str, key: str, event_id: str, *, sent_at: float
    ) -> None:
        await service.on_reaction(room_id, sender, target_event_id, key, event_id, sent_at=sent_at)

    async def expire() -> None:
        closed = await service.expire_due()
        if closed:
            log.info("closed %d expired sync request(s)", closed)

    async def on_ready() -> None:
        # Expiry starts only now: reactions delivered by the catch-up sync
        # (made while the bot was down, before the expiry) are handled first.
        ctx.scheduler.add_job(
            expire,
            "interval",
            seconds=ctx.settings.approvals.expiry_check_interval_s,
            id=EXPIRY_JOB_ID,
            coalesce=True,
            max_instances=1,
            replace_existing=True,
        )
        await service.runner.resume()

    return FeatureParts(
        reaction_handlers=[on_reaction],
        redaction_handlers=[service.on_redaction],
        root_tasks=[service.runner.run],
        on_ready=[on_ready],
    )
