"""Wiring of the Alertmanager relay: ``/hooks/alertmanager`` → one message per alert group.

Built after the dead-man's switch feature, whose ``DeadmansSwitch`` receives
the Watchdog heartbeats the relay takes out of each notification. Puts the
``AlertGroupRepo`` (group ↔ message, for reactions such as 🔕) and the
``AlertRelay`` in the extensions.
"""

from __future__ import annotations

from bot.alertmanager.relay import AlertRelay, RelayMetrics
from bot.alertmanager.render import AlertRenderer
from bot.alertmanager.store import AlertGroupRepo
from bot.alertmanager.webhook import alertmanager_handler
from bot.deadman.switch import DeadmansSwitch
from bot.features import FeatureContext, FeatureParts
from bot.render.templates import Templates

HOOK_NAME = "alertmanager"


async def alerting_feature(ctx: FeatureContext) -> FeatureParts:
    settings = ctx.settings.alertmanager
    templates = Templates(settings.templates_dir) if settings.templates_dir is not None else ctx.templates
    renderer = AlertRenderer(templates, settings)
    # A broken override template fails the start, not every webhook later.
    renderer.self_check()
    repo = AlertGroupRepo(ctx.db)
    relay = AlertRelay(
        db=ctx.db,
        outbox=ctx.outbox,
        repo=repo,
        renderer=renderer,
        settings=settings,
        clock=ctx.clock,
        heartbeats=ctx.extensions.find(DeadmansSwitch),
        metrics=RelayMetrics(ctx.metrics.registry),
    )
    await relay.load()
    ctx.extensions.put(AlertGroupRepo, repo)
    ctx.extensions.put(AlertRelay, relay)
    return FeatureParts(
        hooks={HOOK_NAME: alertmanager_handler(relay)},
        root_tasks=[relay.run_maintenance, relay.run_digest_flusher],
    )
