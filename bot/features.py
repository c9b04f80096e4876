"""How a capability plugs into the bot, without the composition root knowing its insides.

A feature is an async factory: it receives a ``FeatureContext`` (the store,
the outbox, the scheduler, settings, …) and returns ``FeatureParts``: webhook
handlers, reaction handlers, root tasks to supervise, and services its
commands reach through ``Services.extensions``. ``bot.app`` builds every
enabled feature before it starts, so webhooks are served even while the
homeserver is unreachable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from bot.errors import UserError
from bot.permissions import Decision, RoomPowerFacts, decide, effective_power_level
from config.settings import PermissionRule

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from bot.matrix.router import ReactionHandler, RedactionHandler
    from bot.metrics import Metrics
    from bot.outbox import Outbox
    from bot.render.templates import Templates
    from bot.store.audit import AuditRepo
    from bot.store.database import Database
    from bot.store.kv import KeyValueRepo
    from bot.webhooks.server import HookHandler
    from config.settings import Settings

T = TypeVar("T")
RootTask = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class Extensions:
    """Services of features, looked up by their type: ``extensions.get(SilenceApi)``."""

    def __init__(self) -> None:
        self._items: dict[type[Any], object] = {}

    def put(self, key: type[T], value: T) -> None:
        if key in self._items:
            raise ValueError(f"{key.__name__} is provided twice")
        self._items[key] = value

    def get(self, key: type[T], *, what: str | None = None) -> T:
        """The service, or a UserError saying the feature is not configured."""
        if key not in self._items:
            raise UserError(f"{what or key.__name__} is not configured on this bot.")
        return cast(T, self._items[key])

    def find(self, key: type[T]) -> T | None:
        return cast(T | None, self._items.get(key))


class PowerLookup:
    """Indirection so features can ask for power facts before Matrix is connected."""

    def __init__(self) -> None:
        self._lookup: Callable[[str], Awaitable[RoomPowerFacts]] | None = None

    def bind(self, lookup: Callable[[str], Awaitable[RoomPowerFacts]]) -> None:
        self._lookup = lookup

    async def power_facts(self, room_id: str) -> RoomPowerFacts:
        if self._lookup is None:
            return RoomPowerFacts()
        return await self._lookup(room_id)


class Authorizer:
    """Applies a ``PermissionRule`` to a user in a room, reading power levels only when needed."""

    def __init__(self, power: PowerLookup) -> None:
        self._power = power

    async def check(self, user_id: str, room_id: str, rule: PermissionRule) -> Decision:
        level: float | None = None
        if rule.min_power_level is not None:
            level = effective_power_level(user_id, await self._power.power_facts(room_id))
        return decide(user_id, rule, level)


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


def enabled_features(settings: Settings) -> list[FeatureFactory]:
    """The features this configuration turns on, in start order."""
    features: list[FeatureFactory] = []
    if settings.kubernetes.enabled:
        # First: approvals, Velero and readiness look its KubeApi up. Imported
        # here so a bot without a cluster never loads the kubernetes client.
        from bot.kube.feature import kubernetes_feature

        features.append(kubernetes_feature)
    if settings.velero.enabled:
        # After the kubernetes feature, whose KubeApi it watches Velero with
        # (it refuses to start without one).
        from bot.velero.feature import velero_feature

        features.append(velero_feature)
    drills = settings.velero.enabled and settings.velero.drills.enabled
    if settings.approvals.apps or drills:
        # After the kubernetes feature, whose KubeApi it looks up.
        from bot.approvals.feature import approvals_feature

        features.append(approvals_feature)
    if drills:
        # After the approvals feature, which gates the drills, and the kubernetes feature.
        from bot.velero.drill_feature import drills_feature

        features.append(drills_feature)
    # Before the Alertmanager relay, which finds the dead-man's switch in the extensions.
    from bot.deadman_feature import deadman_feature

    features.append(deadman_feature)
    if settings.alertmanager.enabled:
        # After the dead-man's switch, which it hands the Watchdog heartbeats.
        from bot.alerting.feature import alerting_feature

        features.append(alerting_feature)
    if settings.falco.enabled:
        # Depends on no other feature.
        from bot.falco.feature import falco_feature

        features.append(falco_feature)
    if settings.readiness.enabled:
        # Last: after the kubernetes and dead-man's switch features, whose
        # KubeApi, DeadmansSwitch and AlertmanagerApi it looks up.
        from bot.readiness.feature import readiness_feature

        features.append(readiness_feature)
    return features
