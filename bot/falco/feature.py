"""Wiring of the Falco relay: ``/hooks/falco`` → aggregated messages, digests and mutes.

Puts the ``FalcoRelay`` in the extensions (the ``!falco`` commands use it)
and runs its flusher as a root task: it brings counts and digests up to date
within the send budget, closes windows and ends mutes.
"""

from __future__ import annotations

from bot.falco.relay import FalcoMetrics, FalcoRelay
from bot.falco.render import FalcoRenderer
from bot.falco.store import FalcoRepo
from bot.falco.webhook import WebhookMetrics, falco_handler
from bot.features import FeatureContext, FeatureParts
from bot.render.templates import Templates

HOOK_NAME = "falco"


async def falco_feature(ctx: FeatureContext) -> FeatureParts:
    settings = ctx.settings.falco
    templates = Templates(settings.templates_dir) if settings.templates_dir is not None else ctx.templates
    renderer = FalcoRenderer(templates)
    # A broken override template fails the start, not every event later.
    renderer.self_check()
    relay = FalcoRelay(
        db=ctx.db,
        outbox=ctx.outbox,
        repo=FalcoRepo(ctx.db),
        renderer=renderer,
        settings=settings,
        clock=ctx.clock,
        metrics=FalcoMetrics(ctx.metrics.registry),
    )
    await relay.load()
    ctx.extensions.put(FalcoRelay, relay)
    handler = falco_handler(relay, WebhookMetrics(ctx.metrics.registry))
    return FeatureParts(hooks={HOOK_NAME: handler}, root_tasks=[relay.run])
