"""Composition root: open resources, start the root tasks, shut down in order.

Root tasks (Matrix sync, outbox sender) run in one TaskGroup: if one dies the
others are cancelled and the error reaches the CLI, which exits non-zero so
Kubernetes restarts the pod. Resources sit in an AsyncExitStack and close in
reverse order of opening.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from bot import __version__
from bot.catalog import enabled_features
from bot.dispatcher import Dispatcher
from bot.errors import ConfigError
from bot.extensions import Extensions
from bot.features import FeatureContext, FeatureParts
from bot.http.server import Health, HookHandler, build_http_app
from bot.matrix.connection import NETWORK_ERRORS, HomeserverUnavailable, MatrixConnection, wait_or_stop
from bot.matrix.device_trust import DeviceTrust
from bot.matrix.identity import CrossSigningIdentity, HomeserverRefused
from bot.matrix.power import RoomPowerLookup
from bot.matrix.router import Router
from bot.matrix.transport import NioTransport
from bot.metrics import Metrics
from bot.outbox import Outbox, OutboxSender
from bot.permissions import Authorizer
from bot.render.templates import Templates
from bot.scheduling import build_scheduler
from bot.schema import MIGRATIONS
from bot.services import BotDevice, Services
from bot.store.audit import AuditRepo
from bot.store.database import Database
from bot.store.handled import HandledEvents
from bot.store.kv import KeyValueRepo
from bot.store.leadership import Fence, LeadershipLost
from commands import load_all
from commands.registry import CommandRegistry, registry
from config.settings import Settings

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from bot.ha.election import Term
    from bot.ha.elector import LeaderElector

log = logging.getLogger(__name__)

# What the start-up sync retries on: the homeserver being away, not bad credentials.
_START_UP_ERRORS: tuple[type[BaseException], ...] = (HomeserverUnavailable, *NETWORK_ERRORS)

# SIGTERM budget (Kubernetes waits 30 s; we aim for under 10 s in total).
HANDLER_DRAIN_S = 4.0
OUTBOX_FLUSH_S = 3.0
HTTP_SHUTDOWN_S = 2.0


class ReadyBot:
    """One running bot. Tests start it in-process and look at its parts."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        command_registry: CommandRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = Metrics()
        self.health = Health()
        self.ready = asyncio.Event()
        self.http_port: int | None = None
        if command_registry is None:
            load_all()
            command_registry = registry
        self.registry = command_registry
        self.started_at = clock()
        # Set in run(); typed here so tests can reach them once `ready` is set.
        self.db: Database
        self.audit: AuditRepo
        self.outbox: Outbox
        self.connection: MatrixConnection
        self.router: Router
        self._on_ready: list[Callable[[], Awaitable[None]]] = []
        self._on_ready_done = False
        self.device = BotDevice()
        # With ha.enabled: this replica's leadership (bot.ha); None for one replica.
        self.elector: LeaderElector | None = None
        self.fence: Fence | None = None

    async def run(self, stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            store = self.settings.store
            self.db = await Database.open(
                store.path,
                migrations=MIGRATIONS,
                clock=self.clock,
                url=None if store.url is None else store.url.get_secret_value(),
            )
            stack.push_async_callback(self.db.close)
            self.health.store_open = True
            kv, audit, handled = KeyValueRepo(self.db), AuditRepo(self.db), HandledEvents(self.db)
            self.audit = audit

            device_kv = await self._open_election(stack) if self.settings.ha.enabled else kv
            self.connection = MatrixConnection(self.settings.matrix, device_kv, self.metrics)
            stack.push_async_callback(self.connection.close)
            self._identity = CrossSigningIdentity(self.connection.client, self.settings.matrix, kv)
            sender = OutboxSender(
                self.db,
                NioTransport(self.connection),
                self.settings.outbox,
                self.metrics,
                clock=self.clock,
                fence=self.fence,
            )
            self.outbox = Outbox(
                self.db,
                clock=self.clock,
                on_enqueued=sender.wake,
                max_in_flight_per_room=self.settings.outbox.max_in_flight_per_room,
            )
            authorizer = Authorizer(RoomPowerLookup(self.connection).power_facts)
            extensions = Extensions()
            templates = Templates()
            scheduler = build_scheduler(handled, self.clock)
            context = FeatureContext(
                settings=self.settings,
                db=self.db,
                kv=kv,
                audit=audit,
                outbox=self.outbox,
                metrics=self.metrics,
                templates=templates,
                scheduler=scheduler,
                authorizer=authorizer,
                extensions=extensions,
                clock=self.clock,
                bot_user_id=self.settings.matrix.user_id,
                fence=self.fence,
            )
            # A standby builds its features when it takes the lead (_take_lead):
            # what they start (jobs, watches, silence counted from "now") is then
            # the leader's, from the moment it leads.
            parts = FeatureParts() if self.elector is not None else await self._build_features(context)
            services = Services(
                settings=self.settings,
                registry=self.registry,
                outbox=self.outbox,
                audit=audit,
                templates=templates,
                metrics=self.metrics,
                clock=self.clock,
                version=__version__,
                authorizer=authorizer,
                extensions=extensions,
                device=self.device,
            )
            dispatcher = Dispatcher(services)
            self.router = Router(
                self.settings.matrix,
                self.connection,
                dispatcher,
                handled,
                audit,
                self.metrics,
                self.started_at,
                self.clock,
                DeviceTrust(self._identity.query, time.monotonic)
                if self.settings.matrix.encryption
                else None,
            )
            self.router.reaction_handlers.extend(parts.reaction_handlers)
            self.router.redaction_handlers.extend(parts.redaction_handlers)
            if self.elector is not None:
                self.router.stand_by()
            # What start-up allocated (libraries, settings, features) lives as
            # long as the process: keep the cyclic GC from re-scanning it. A
            # full collection over it stalls the event loop ~60-100 ms, which
            # showed up as the webhooks' p99 answer time during alert storms.
            # Collect first, so no garbage is frozen with it.
            gc.collect()
            gc.freeze()
            await self._start_http(stack, parts.hooks)
            stack.callback(_shutdown_scheduler, scheduler)

            sender_stop = asyncio.Event()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._matrix(stop), name="matrix")
                group.create_task(self._shutdown_when(stop, sender_stop), name="shutdown")
                acting = _Acting(group, stop, sender, sender_stop, scheduler)
                if self.elector is None:
                    acting.start(parts)
                else:

                    async def on_lead(_term: Term) -> None:
                        # A task of its own: building the features must not
                        # hold up the renewals that keep the lead.
                        group.create_task(self._take_lead(context, parts, acting), name="take-lead")

                    group.create_task(self.elector.run(stop, on_lead), name="leader-election")
            if self.elector is not None:
                await self.elector.release()
            log.info("stopped")

    async def _open_election(self, stack: contextlib.AsyncExitStack) -> KeyValueRepo:
        """The Lease client, the fence and the elector (ha.enabled); the kv this replica's device uses."""
        if not self.settings.kubernetes.enabled:
            raise ConfigError(["ha.enabled: needs kubernetes.enabled (the Lease is kept in the cluster)"])
        # Imported here: a bot without ha never loads the election (nor kubernetes for it).
        from bot.ha.elector import LeaderElector
        from bot.ha.lease import KubeLeases
        from bot.ha.replica import ReplicaKeyValue

        ha = self.settings.ha
        leases = await asyncio.to_thread(KubeLeases.from_settings, self.settings.kubernetes, ha)
        stack.push_async_callback(leases.close)
        self.fence = Fence(self.db, clock=self.clock)
        self.elector = LeaderElector(leases, ha, self.fence, self.metrics)
        self.health.leader = False
        # Each replica is its own Matrix device: its token and sync position
        # are its own; the cross-signing identity is shared.
        return ReplicaKeyValue(self.db, ha.identity)

    async def _take_lead(self, context: FeatureContext, hooks_parts: FeatureParts, acting: _Acting) -> None:
        """Became the leader: build the features and start everything that acts, from the shared state."""
        led_at = self.clock()
        parts = await self._build_features(context)
        hooks_parts.hooks.update(parts.hooks)  # the HTTP server serves this dict
        self.router.reaction_handlers.extend(parts.reaction_handlers)
        self.router.redaction_handlers.extend(parts.redaction_handlers)
        # What arrived while standing by goes first (an approval made in the
        # gap counts before the first expiry check can run).
        await self.router.take_lead(led_at)
        acting.start(parts)
        # A replica that lost the race for the store's term stops (the fence).
        assert self.fence is not None
        acting.group.create_task(_exit_when_fenced(self.fence), name="fence")
        self.health.leader = True
        if self.connection.first_sync_done.is_set():
            await self._run_on_ready()

    async def _matrix(self, stop: asyncio.Event) -> None:
        connection, router = self.connection, self.router
        if not await connection.login_until_done(stop):
            return
        if not await self._cross_sign(stop):
            return
        if not await self._first_sync(stop):
            return
        try:
            await router.join_pending()
        except NETWORK_ERRORS as error:
            log.warning("joining rooms after start-up failed (%s); invites are retried on arrival", error)
        connection.first_sync_done.set()
        self.health.first_sync_done = True
        self.metrics.ready.set(1)
        # With ha, _take_lead runs them if it finishes after this point.
        if self.elector is None or self.health.leader:
            await self._run_on_ready()
        self.ready.set()
        log.info(
            "ready: serving %d room(s) as %s, device %s (%s)",
            len(router.allowed_rooms),
            connection.user_id,
            connection.client.device_id,
            _device_line(self.device),
        )
        await connection.sync_loop(stop)

    async def _run_on_ready(self) -> None:
        """The features' on_ready callbacks, once: after the first sync, and (ha) once leading."""
        if self._on_ready_done:
            return
        self._on_ready_done = True
        for callback in self._on_ready:
            await callback()

    async def _cross_sign(self, stop: asyncio.Event) -> bool:
        """Make sure the bot's device is cross-signed by the bot's identity; False when stopped first.

        An identity the bot may not use or replace (``IdentityConflict``) ends
        the start (exit 78). A homeserver that refuses a request is logged
        and the bot runs on unsigned: legacy clients can still talk to it,
        and ``readybot_device_cross_signed`` 0 raises the alert.
        """
        matrix = self.settings.matrix
        self.device.device_id = self.connection.client.device_id
        if not (matrix.encryption and matrix.cross_signing.enabled):
            return True
        gauge = self.metrics.device_cross_signed.labels(device=str(self.device.device_id))
        delay = 1.0
        while not stop.is_set():
            try:
                status = await self._identity.ensure()
            except NETWORK_ERRORS as error:
                log.warning(
                    "cross-signing check failed (%s); retrying in %.0f s", type(error).__name__, delay
                )
                if await wait_or_stop(stop, delay):
                    return False
                delay = min(delay * 2, matrix.max_retry_backoff_s)
                continue
            except HomeserverRefused as error:
                log.error("the bot's device stays unsigned: %s", error)
                self.device.checked = True
                gauge.set(0)
                return True
            self.device.checked = True
            self.device.cross_signed = status.cross_signed
            gauge.set(1 if status.cross_signed else 0)
            return True
        return False

    async def _first_sync(self, stop: asyncio.Event) -> bool:
        """Resolve the rooms and make the start-up sync, retrying while the homeserver is away.

        With a persisted token, events that arrived while we were away are
        delivered now (reactions still count; commands are skipped by age), so
        callbacks are registered first. Without one, the first sync is
        history: callbacks are registered after it and nothing in it is acted on.
        """
        resuming = await self.connection.has_sync_token()
        if resuming:
            self.router.register()
        delay = 1.0
        while not stop.is_set():
            try:
                await self.router.resolve_rooms()
                await self.connection.first_sync()
            except _START_UP_ERRORS as error:
                log.warning("first sync failed (%s); retrying in %.0f s", error, delay)
                if await wait_or_stop(stop, delay):
                    return False
                delay = min(delay * 2, 30.0)
                continue
            if not resuming:
                self.router.register()
            return True
        return False

    async def _shutdown_when(self, stop: asyncio.Event, sender_stop: asyncio.Event) -> None:
        """On stop: let running handlers finish, give the outbox a moment to flush, stop the sender."""
        await stop.wait()
        await self.router.supervisor.drain(HANDLER_DRAIN_S)
        deadline = self.clock() + OUTBOX_FLUSH_S
        # A standby sends nothing: the outbox is the leader's to flush.
        while (
            not self.health.standby and self.connection.first_sync_done.is_set() and self.clock() < deadline
        ):
            if (await self.outbox.stats()).depth == 0:
                break
            await asyncio.sleep(0.05)
        sender_stop.set()

    async def _build_features(self, context: FeatureContext) -> FeatureParts:
        """Build every enabled feature and merge their parts."""
        merged = FeatureParts()
        for factory in enabled_features(self.settings):
            parts = await factory(context)
            for name, handler in parts.hooks.items():
                if name in merged.hooks:
                    raise ValueError(f"two features serve /hooks/{name}")
                merged.hooks[name] = handler
            merged.reaction_handlers.extend(parts.reaction_handlers)
            merged.redaction_handlers.extend(parts.redaction_handlers)
            merged.root_tasks.extend(parts.root_tasks)
            merged.on_ready.extend(parts.on_ready)
        self._on_ready = merged.on_ready
        return merged

    async def _start_http(self, stack: contextlib.AsyncExitStack, hooks: dict[str, HookHandler]) -> None:
        http = self.settings.http
        app = build_http_app(
            metrics=self.metrics,
            health=self.health,
            hook_tokens=http.hook_tokens,
            hooks=hooks,
            max_body_bytes=http.max_body_bytes,
            refresh_metrics=self._refresh_metrics,
        )
        runner = web.AppRunner(app, shutdown_timeout=HTTP_SHUTDOWN_S, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, http.host, http.port)
        await site.start()
        address = runner.addresses[0]
        self.http_port = int(address[1])
        log.info("http server on %s:%d", http.host, self.http_port)

    async def _refresh_metrics(self) -> None:
        # The depth is read from the store at scrape time so it is exact even
        # while the sender is backing off; the oldest age is computed by the
        # sender's gauge function.
        self.metrics.outbox_depth.set((await self.outbox.stats()).depth)


class _Acting:
    """Starts what acts: the outbox sender, the scheduler and the features' root tasks (once)."""

    def __init__(
        self,
        group: asyncio.TaskGroup,
        stop: asyncio.Event,
        sender: OutboxSender,
        sender_stop: asyncio.Event,
        scheduler: AsyncIOScheduler,
    ) -> None:
        self.group = group
        self._stop = stop
        self._sender = sender
        self._sender_stop = sender_stop
        self._scheduler = scheduler

    def start(self, parts: FeatureParts) -> None:
        self._scheduler.start()
        self.group.create_task(self._sender.run(self._sender_stop), name="outbox-sender")
        for task in parts.root_tasks:
            # Named after the feature's coroutine (``AlertRelay.run_maintenance``),
            # so a crash says which part died.
            self.group.create_task(task(self._stop), name=task.__qualname__)


def _shutdown_scheduler(scheduler: AsyncIOScheduler) -> None:
    # A standby never started it (and APScheduler refuses to shut down a stopped scheduler).
    if scheduler.running:
        scheduler.shutdown(wait=False)


async def _exit_when_fenced(fence: Fence) -> None:
    """End the process once a store check found a newer leader: nothing of this term may act on."""
    await fence.lost.wait()
    raise LeadershipLost("another replica took the lead (fenced by the store)")


def _device_line(device: BotDevice) -> str:
    if not device.checked:
        return "cross-signing off"
    return "cross-signed by its owner" if device.cross_signed else "NOT cross-signed by its owner"


async def run_app(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    await ReadyBot(settings).run(stop or asyncio.Event())
