"""Wiring of the Alertmanager capability: the relay, and silences from chat.

With ``alertmanager.enabled``: the relay behind ``/hooks/alertmanager`` (one
message per alert group), its Watchdog heartbeats handed to the dead-man's
switch (``Heartbeats`` in the extensions, built before this feature); the
``AlertGroupRepo`` and the ``AlertRelay`` go into the extensions. With
``alertmanager.api_url``: the API client, the ``SilenceService`` the commands
use and the 🔕 reaction handler (which needs the relay's groups to know which
message is an alert group).
"""

from __future__ import annotations

from bot.alertmanager.api import AlertmanagerApi
from bot.alertmanager.reaction import AlertGroupView, SilenceReactionHandler
from bot.alertmanager.relay import AlertRelay, RelayMetrics
from bot.alertmanager.render import AlertRenderer
from bot.alertmanager.silences import SilenceService
from bot.alertmanager.store import AlertGroupRepo
from bot.alertmanager.webhook import alertmanager_handler
from bot.features import FeatureContext, FeatureParts
from bot.heartbeats import Heartbeats, HeartbeatSink, WatchdogFilter
from bot.outbox import EventRef
from bot.render.templates import Templates
from bot.store.handled import HandledEvents

HOOK_NAME = "alertmanager"


async def alertmanager_feature(ctx: FeatureContext) -> FeatureParts:
    settings = ctx.settings.alertmanager
    found = ctx.extensions.find(Heartbeats)
    heartbeats: HeartbeatSink = found.sink if found is not None else WatchdogFilter()
    parts = FeatureParts()
    repo: AlertGroupRepo | None = None
    if settings.enabled:
        repo = AlertGroupRepo(ctx.db)
        templates = Templates(settings.templates_dir) if settings.templates_dir is not None else ctx.templates
        renderer = AlertRenderer(templates, settings)
        # A broken override template fails the start, not every webhook later.
        renderer.self_check()
        relay = AlertRelay(
            db=ctx.db,
            outbox=ctx.outbox,
            repo=repo,
            renderer=renderer,
            settings=settings,
            clock=ctx.clock,
            heartbeats=heartbeats,
            metrics=RelayMetrics(ctx.metrics.registry),
        )
        await relay.load()
        ctx.extensions.put(AlertGroupRepo, repo)
        ctx.extensions.put(AlertRelay, relay)
        parts.hooks[HOOK_NAME] = alertmanager_handler(relay)
        parts.root_tasks.extend([relay.run_maintenance, relay.run_digest_flusher])
    if settings.api_url is not None:
        _add_silences(ctx, parts, repo, heartbeats)
    return parts


def _add_silences(
    ctx: FeatureContext, parts: FeatureParts, groups: AlertGroupRepo | None, heartbeats: HeartbeatSink
) -> None:
    """The API client, ``SilenceService`` and the 🔕 handler (no group is known while the relay is off)."""
    alertmanager = ctx.settings.alertmanager
    api = AlertmanagerApi(str(alertmanager.api_url), timeout_s=alertmanager.api_timeout_s)
    ctx.extensions.put(AlertmanagerApi, api)
    service = SilenceService(
        api,
        ctx.audit,
        clock=ctx.clock,
        is_heartbeat=heartbeats.is_heartbeat,
        default_duration=alertmanager.silence_default_duration,
        max_duration=alertmanager.silence_max_duration,
        prefix=ctx.settings.matrix.command_prefix,
    )
    ctx.extensions.put(SilenceService, service)
    parts.reaction_handlers.append(
        SilenceReactionHandler(
            service,
            groups=lambda: groups,
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


def _thread_root(group: AlertGroupView) -> EventRef | None:
    return group.thread_root
