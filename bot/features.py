"""How a capability plugs into the bot: the protocol only, without the composition root knowing its insides.

A feature is an async factory: it receives a ``FeatureContext`` (the store,
the outbox, the scheduler, settings, …) and returns ``FeatureParts``: webhook
handlers, reaction handlers, root tasks to supervise, and services its
commands reach through ``Services.extensions``. ``bot.app`` builds every
enabled feature (``bot.catalog.enabled_features``) before it starts, so
webhooks are served even while the homeserver is unreachable. This module
imports no feature.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.extensions import Extensions
from bot.permissions import Authorizer

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from bot.http.server import HookHandler
    from bot.matrix.router import ReactionHandler, RedactionHandler
    from bot.metrics import Metrics
    from bot.outbox import Outbox
    from bot.render.templates import Templates
    from bot.store.audit import AuditRepo
    from bot.store.database import Database
    from bot.store.kv import KeyValueRepo
    from bot.store.leadership import Fence
    from config.settings import Settings

RootTask = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class FeatureContext:
    settings: Settings
    db: Database
    kv: KeyValueRepo
    audit: AuditRepo
    outbox: Outbox
    metrics: Metrics
    templates: Templates
    scheduler: AsyncIOScheduler
    authorizer: Authorizer
    extensions: Extensions
    clock: Callable[[], float]
    # The bot's own Matrix id (reactions from it are never acted on).
    bot_user_id: str
    # With ha.enabled: this replica's leadership term, checked in the same
    # transaction as every externally visible act (bot.store.leadership).
    # None for one replica: it always acts.
    fence: Fence | None = None


@dataclass
class FeatureParts:
    hooks: dict[str, HookHandler] = field(default_factory=dict)
    reaction_handlers: list[ReactionHandler] = field(default_factory=list)
    redaction_handlers: list[RedactionHandler] = field(default_factory=list)
    # Supervised with the other root tasks; each must return soon after stop is set.
    root_tasks: list[RootTask] = field(default_factory=list)
    # Run once the first sync is done (e.g. re-follow work interrupted by a restart).
    on_ready: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


FeatureFactory = Callable[[FeatureContext], Awaitable[FeatureParts]]


__all__ = ["Extensions", "FeatureContext", "FeatureFactory", "FeatureParts", "RootTask"]
