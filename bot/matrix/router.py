"""Incoming Matrix events → the right handler, without blocking the sync loop.

nio awaits callbacks inside its sync loop; a slow or failing callback would
stall or kill it. Each callback here only filters, then hands the work to a
supervised task with its own error boundary.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol

from nio import (
    InviteMemberEvent,
    JoinError,
    MatrixRoom,
    MegolmEvent,
    ReactionEvent,
    RedactionEvent,
    RoomMessageText,
    RoomResolveAliasResponse,
)

from bot.dispatcher import Dispatcher, IncomingCommand
from bot.matrix.connection import MatrixConnection
from bot.matrix.device_trust import DeviceTrust, SessionFacts, session_facts
from bot.metrics import Metrics
from bot.permissions import matches_user
from bot.store.audit import AuditRepo
from bot.store.handled import HandledEvents
from config.settings import MatrixSettings

log = logging.getLogger(__name__)

# What a standby holds for when it takes the lead: the newest events, and of
# them only those younger than this (older ones the leader of the time saw).
STANDBY_HELD_EVENTS = 2_000
STANDBY_HELD_MAX_AGE_S = 3_600.0


class ReactionHandler(Protocol):
    """Told about a reaction in a served room; ``sent_at`` is the homeserver's timestamp (epoch s).

    The timestamp matters to handlers that judge when a reaction was made:
    an approval made while the bot was down counts if it was made in time.
    """

    async def __call__(
        self, room_id: str, sender: str, target_event_id: str, key: str, event_id: str, *, sent_at: float
    ) -> None: ...


class RedactionHandler(Protocol):
    """Told when someone redacts an event (e.g. withdraws a reaction) in a served room."""

    async def __call__(self, room_id: str, sender: str, redacted_event_id: str, event_id: str) -> None: ...


def edit_text(source: Mapping[str, Any]) -> str | None:
    """The new text of an edit (``m.replace``), or None when the event is no edit.

    Reads the decrypted content, into which nio copies the relation of the
    encrypted envelope when the ciphertext has none.
    """
    content = source.get("content")
    if not isinstance(content, Mapping):
        return None
    relates = content.get("m.relates_to")
    if not isinstance(relates, Mapping) or relates.get("rel_type") != "m.replace":
        return None
    new_content = content.get("m.new_content")
    new_body = new_content.get("body") if isinstance(new_content, Mapping) else None
    return new_body.strip() if isinstance(new_body, str) else ""


class TaskSupervisor:
    """Runs handler tasks with an error boundary and drains them on shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._guard(name, work), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, name: str, work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler task %s failed", name)

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 - a grace period, not a caller deadline
        """Let in-flight handlers finish, then cancel what is left."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)


class Router:
    def __init__(
        self,
        settings: MatrixSettings,
        connection: MatrixConnection,
        dispatcher: Dispatcher,
        handled: HandledEvents,
        audit: AuditRepo,
        metrics: Metrics,
        started_at: float,
        clock: Callable[[], float],
        device_trust: DeviceTrust | None = None,
    ) -> None:
        self._device_trust = device_trust
        self._settings = settings
        self._connection = connection
        self._dispatcher = dispatcher
        self._handled = handled
        self._audit = audit
        self._metrics = metrics
        self._started_at = started_at
        self._clock = clock
        self.supervisor = TaskSupervisor()
        self.allowed_rooms: set[str] = set()
        self.reaction_handlers: list[ReactionHandler] = []
        self.redaction_handlers: list[RedactionHandler] = []
        # A standby replica (ha.enabled) keeps syncing but acts on nothing:
        # commands, reactions and redactions wait here until it takes the lead.
        self._standby: collections.deque[tuple[Callable[..., Awaitable[None]], MatrixRoom, Any]] | None = None

    def stand_by(self) -> None:
        """Hold commands, reactions and redactions instead of acting on them, until ``take_lead``."""
        self._standby = collections.deque(maxlen=STANDBY_HELD_EVENTS)

    async def take_lead(self, at: float) -> None:
        """Act from now on, as if started at ``at``; then hand on what arrived while standing by.

        The restart rule holds with "start-up" meaning "took the lead": a held
        command the old leader did not claim is audited, not run; held
        reactions go to their handlers, which count them once (by event id).
        """
        held, self._standby = self._standby or collections.deque(), None
        self._started_at = at
        for callback, room, event in held:
            if at - event.server_timestamp / 1000 <= STANDBY_HELD_MAX_AGE_S:
                await callback(room, event)

    async def resolve_rooms(self) -> None:
        """Turn configured aliases into room ids; an alias that does not resolve counts for nothing."""
        client = self._connection.client
        for room in self._settings.rooms:
            if room.startswith("!"):
                self.allowed_rooms.add(room)
                continue
            response = await client.room_resolve_alias(room)
            if isinstance(response, RoomResolveAliasResponse):
                self.allowed_rooms.add(response.room_id)
            else:
                log.error("room alias %s could not be resolved; it is not served", room)

    def register(self) -> None:
        client = self._connection.client
        client.add_event_callback(self._on_text, RoomMessageText)
        client.add_event_callback(self._on_reaction, ReactionEvent)
        client.add_event_callback(self._on_redaction, RedactionEvent)
        client.add_event_callback(self._on_undecryptable, MegolmEvent)
        client.add_event_callback(self._on_invite, InviteMemberEvent)

    async def join_pending(self) -> None:
        """After start-up: accept invites that arrived while the bot was away, join configured rooms."""
        client = self._connection.client
        for room_id, room in list(client.invited_rooms.items()):
            inviter = getattr(room, "inviter", None) or ""
            await self._maybe_join(room_id, inviter)
        for room_id in self.allowed_rooms - set(client.rooms):
            response = await client.join(room_id)
            if isinstance(response, JoinError):
                log.warning("could not join configured room %s: %s", room_id, response.status_code)

    # -- callbacks (run inside the sync loop: filter and spawn only) ------

    async def _on_text(self, room: MatrixRoom, event: RoomMessageText) -> None:
        if not self._counts(room.room_id, event.sender):
            return
        if self._standby is not None:
            self._standby.append((self._on_text, room, event))
            return
        body = event.body or ""
        prefix = self._settings.command_prefix
        edited = edit_text(event.source)
        if edited is not None:
            # An edit is never a command. It has a new event id, so running it
            # would run a command again that was (or was not) run once; and its
            # m.relates_to may name anyone's message, the bot's included, so it
            # could dress a command up as an old message of someone else.
            if body.startswith(prefix) or edited.startswith(prefix):
                self.supervisor.spawn(f"edit {event.event_id}", self._skip_edit(room.room_id, event, edited))
            return
        if not body.startswith(prefix):
            return
        sent_at = event.server_timestamp / 1000
        incoming = IncomingCommand(event.sender, room.room_id, event.event_id, body.strip(), sent_at)
        # Read now, while nio's session store surely holds the session; the
        # lookup of the sender's devices (network) happens in the task.
        session = session_facts(self._connection.client, room.room_id, event)
        self.supervisor.spawn(f"command {event.event_id}", self._handle_command(incoming, session))

    async def _skip_edit(self, room_id: str, event: RoomMessageText, edited: str) -> None:
        log.info("not running an edit as a command (%s)", event.event_id)
        await self._audit.record(
            event.sender,
            "command:skipped",
            "edit",
            room_id=room_id,
            event_id=event.event_id,
            args=edited[:500],
        )

    async def _handle_command(self, incoming: IncomingCommand, session: SessionFacts | None = None) -> None:
        # A command is handled at most once, whatever the sync replays.
        if not await self._handled.claim(incoming.event_id):
            return
        if self._device_trust is not None and session is not None:
            device = await self._device_trust.resolve(incoming.sender, session)
            incoming = dataclasses.replace(incoming, sender_device=device)
        if incoming.sent_at < self._started_at:
            # Sent while the bot was down: running it now could surprise
            # (a sync nobody is watching for). Recorded, not run.
            log.info("not running a command sent before start-up (%s)", incoming.event_id)
            await self._audit.record(
                incoming.sender,
                "command:skipped",
                "sent-before-start",
                room_id=incoming.room_id,
                event_id=incoming.event_id,
                args=incoming.body[:500],
            )
            return
        await self._dispatcher.handle(incoming)

    async def _on_reaction(self, room: MatrixRoom, event: ReactionEvent) -> None:
        if not self._counts(room.room_id, event.sender):
            return
        if self._standby is not None:
            self._standby.append((self._on_reaction, room, event))
            return
        for handler in self.reaction_handlers:
            self.supervisor.spawn(
                f"reaction {event.event_id}",
                handler(
                    room.room_id,
                    event.sender,
                    event.reacts_to,
                    event.key,
                    event.event_id,
                    sent_at=event.server_timestamp / 1000,
                ),
            )

    async def _on_redaction(self, room: MatrixRoom, event: RedactionEvent) -> None:
        if not self._counts(room.room_id, event.sender):
            return
        if self._standby is not None:
            self._standby.append((self._on_redaction, room, event))
            return
        for handler in self.redaction_handlers:
            self.supervisor.spawn(
                f"redaction {event.event_id}",
                handler(room.room_id, event.sender, event.redacts, event.event_id),
            )

    async def _on_undecryptable(self, room: MatrixRoom, event: MegolmEvent) -> None:
        if room.room_id not in self.allowed_rooms:
            return
        self._metrics.undecryptable_events.inc()
        log.warning(
            "could not decrypt event %s from %s in %s (session %s); requesting the key",
            event.event_id,
            event.sender,
            room.room_id,
            event.session_id,
        )
        self.supervisor.spawn(f"key request {event.event_id}", self._request_key(event))

    async def _request_key(self, event: MegolmEvent) -> None:
        try:
            await self._connection.client.request_room_key(event)
        except Exception as error:  # a duplicate request raises; nothing to do
            log.debug("room key request not sent: %s", error)

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key != self._connection.user_id or event.membership != "invite":
            return
        self.supervisor.spawn(f"invite {room.room_id}", self._maybe_join(room.room_id, event.sender))

    async def _maybe_join(self, room_id: str, inviter: str) -> None:
        client = self._connection.client
        if room_id in self.allowed_rooms or matches_user(inviter, self._settings.invite_from):
            response = await client.join(room_id)
            if isinstance(response, JoinError):
                log.warning("joining %s failed: %s", room_id, response.status_code)
            else:
                log.info("joined %s (invited by %s)", room_id, inviter)
        else:
            log.info(
                "declining invite to %s from %s: neither room nor inviter is configured", room_id, inviter
            )
            await client.room_leave(room_id)

    def _counts(self, room_id: str, sender: str) -> bool:
        """Only events from others, in rooms the bot serves, are acted on."""
        return sender != self._connection.user_id and room_id in self.allowed_rooms
