"""The durable outbox: every outgoing Matrix event is queued here, then sent.

``Outbox`` is the producer side: it commits a row before returning, so a
webhook can be answered 2xx as soon as ``send_message`` returns. ``OutboxSender``
is the consumer: one task per room with pending rows sends that room's rows,
several at once (``max_in_flight_per_room``) but relations in id order and
each after its target (rooms proceed independently), retrying with back-off while the
homeserver is unreachable, pausing every room on a 429 (the rate limit is per
user), and giving up on a row only after repeated permanent refusals.

Exactly-once delivery rests on the Matrix transaction id: each row gets a
random txn id at enqueue and every attempt reuses it, so if the bot dies
after the homeserver accepted an event but before the row was marked sent,
the resend after restart is deduplicated by the homeserver (same device, same
txn id) and returns the original event id. A new device (a wiped crypto
store) has another transaction-id space: then the row, marked begun before
its first send, is first looked for in the room (``bot.outbox.inflight``).

Relations (reply, thread, edit, reaction) may point at an earlier row of the
same room by its ``OutboxId`` instead of an event id; the reference is
resolved when the dependent row is sent, which the sender starts only after
its target was settled.

Under a rate limit every event costs budget, and only a message's newest
content matters: ``edit(..., supersede=True)`` replaces a still-pending edit
of the same message, and ``rewrite_pending`` changes a message that is queued
behind at least ``max_in_flight_per_room`` others (so certainly not being
sent). The sender records a send only if the row's txn id is unchanged, so
an edit superseded while on its way is sent again with the newer content.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.outbox.errors import EventTooLargeError
from bot.outbox.events import EventRef, check_message_content, check_room, check_size
from bot.outbox.media import OutboxMediaRepo
from bot.outbox.repo import NewOutboxRow, OutboxId, OutboxKind, OutboxRepo, OutboxState, Ref, SendLoad
from bot.store.database import Database
from bot.store.tx import Tx
from config.settings import OutboxSettings

log = logging.getLogger(__name__)

_DEFAULT_IN_FLIGHT = OutboxSettings().max_in_flight_per_room

# Media (a chart) are kept in the store until sent: bound them well below
# any homeserver's upload limit (Synapse's default is 50 MB).
MAX_MEDIA_BYTES = 8 * 1024 * 1024
_WAIT_SENT_MAX_POLL_S = 0.25


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int
    """Rows waiting to be sent."""
    oldest_age_s: float
    """Age of the oldest waiting row in seconds; 0 when none waits."""


class Outbox:
    """Queue outgoing events. Each method commits (or joins ``tx``) before returning.

    With ``tx`` the row commits with the caller's transaction, so e.g. an
    approval row and its prompt are stored together or not at all.
    ``on_enqueued`` (the sender's ``wake``) then fires before that commit;
    that is safe because the sender's reads wait for the open transaction.
    """

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float] | None = None,
        on_enqueued: Callable[[], None] | None = None,
        max_in_flight_per_room: int = _DEFAULT_IN_FLIGHT,
    ) -> None:
        self._db = db
        # The sender's window (outbox.max_in_flight_per_room): a row with at
        # least this many pending rows before it is not on its way.
        self._in_flight_window = max_in_flight_per_room
        self._repo = OutboxRepo(db)
        self._media = OutboxMediaRepo(db)
        self._clock = clock or db.clock
        self.on_enqueued = on_enqueued

    async def send_message(
        self,
        room_id: str,
        content: dict[str, Any],
        *,
        reply_to: EventRef | None = None,
        thread_root: EventRef | None = None,
        tx: Tx | None = None,
    ) -> OutboxId:
        """Queue an ``m.room.message``: plain, a reply, in a thread, or a reply within a thread."""
        check_message_content(content)
        if (reply_to is not None or thread_root is not None) and "m.relates_to" in content:
            raise ValueError("content already has m.relates_to; do not also pass reply_to/thread_root")
        if thread_root is not None:
            kind = OutboxKind.THREAD
        elif reply_to is not None:
            kind = OutboxKind.REPLY
        else:
            kind = OutboxKind.MESSAGE
        return await self._enqueue(room_id, kind, content, target=reply_to, root=thread_root, tx=tx)

    async def edit(
        self,
        room_id: str,
        target: EventRef,
        new_content: dict[str, Any],
        *,
        supersede: bool = False,
        tx: Tx | None = None,
    ) -> OutboxId:
        """Queue an edit (``m.replace``) of ``target``, the original event (not an earlier edit).

        With ``supersede``, an edit of the same target that is still pending
        gets this content instead (and a new txn id), keeping its place in
        the queue; its id is returned. Only the newest content of a message
        matters, and every event sent costs rate budget. If that edit was
        already on its way, the sender notices the changed txn id when it
        records the send and sends the newer content as well.
        """
        check_message_content(new_content)
        if not supersede:
            return await self._enqueue(room_id, OutboxKind.EDIT, new_content, target=target, tx=tx)
        async with self._db.transaction(tx) as conn:
            replaced = await self.supersede_edit(room_id, target, new_content, tx=conn)
            if replaced is not None:
                return replaced
            return await self._enqueue(room_id, OutboxKind.EDIT, new_content, target=target, tx=conn)

    async def supersede_edit(
        self,
        room_id: str,
        target: EventRef,
        new_content: dict[str, Any],
        *,
        tx: Tx | None = None,
    ) -> OutboxId | None:
        """Give the still-pending edit of ``target`` this content (and a new txn id); None if none is pending.

        For a producer that would rather wait than queue another edit now.
        """
        check_message_content(new_content)
        check_room(room_id)
        check_size(OutboxKind.EDIT, new_content, target=target, root=None)
        async with self._db.transaction(tx) as conn:
            stored = await self._stored_ref(conn, room_id, target)
            # The pending edit may name the target either way: by the row
            # (queued before the target was sent) or by its event id.
            by_row = target if type(target) is int else stored.outbox_id
            replaced = await self._repo.supersede_edit(
                conn,
                room_id,
                OutboxId(by_row) if by_row is not None else None,
                stored.event_id,
                new_content,
                uuid.uuid4().hex,
            )
        if replaced is not None:
            log.debug("outbox %d superseded: edit in %s", replaced, room_id)
        return replaced

    async def rewrite_pending(
        self,
        room_id: str,
        outbox_id: OutboxId,
        content: dict[str, Any],
        *,
        tx: Tx | None = None,
    ) -> bool:
        """Give a queued message new content instead of queueing an edit of it; True if done.

        Only a plain message with at least ``max_in_flight_per_room``
        earlier pending rows in its room qualifies: the sender starts only
        rows among a room's first ``max_in_flight_per_room`` pending ones, and
        a row's count of earlier pending rows only shrinks, so such a row is
        not on its way now and was never sent (not even before a restart,
        unless the setting was lowered across it). Its txn id stays.
        """
        check_message_content(content)
        check_room(room_id)
        check_size(OutboxKind.MESSAGE, content, target=None, root=None)
        async with self._db.transaction(tx) as conn:
            done = await self._repo.rewrite_queued_message(
                conn, room_id, outbox_id, content, behind=self._in_flight_window
            )
        if done:
            log.debug("outbox %d rewritten before sending", outbox_id)
        return done

    async def send_image(
        self,
        room_id: str,
        data: bytes,
        *,
        filename: str,
        content_type: str = "image/png",
        body: str | None = None,
        info: dict[str, Any] | None = None,
        reply_to: EventRef | None = None,
        tx: Tx | None = None,
    ) -> OutboxId:
        """Queue an ``m.image``; the sender uploads ``data`` (encrypted in an encrypted room), then sends.

        ``info`` adds to the image info (``w``, ``h``); mimetype and size are set here.
        """
        if len(data) > MAX_MEDIA_BYTES:
            raise EventTooLargeError(f"the image is {len(data)} bytes; the limit is {MAX_MEDIA_BYTES}")
        content: dict[str, Any] = {
            "msgtype": "m.image",
            "body": body or filename,
            "info": {**(info or {}), "mimetype": content_type, "size": len(data)},
        }
        kind = OutboxKind.MESSAGE if reply_to is None else OutboxKind.REPLY
        check_room(room_id)
        check_size(kind, content, target=reply_to, root=None)
        async with self._db.transaction(tx) as conn:
            target = await self._stored_ref(conn, room_id, reply_to)
            outbox_id = await self._insert(conn, room_id, kind, content, target, Ref())
            await self._media.insert(conn, outbox_id, data, content_type, filename)
        self._enqueued(outbox_id, kind, room_id)
        return outbox_id

    async def react(self, room_id: str, target: EventRef, key: str, *, tx: Tx | None = None) -> OutboxId:
        """Queue an ``m.reaction`` with ``key`` (e.g. an emoji) on ``target``."""
        if not isinstance(key, str) or not key:
            raise ValueError("a reaction key must be a non-empty string")
        return await self._enqueue(room_id, OutboxKind.REACTION, {"key": key}, target=target, tx=tx)

    async def reply_target(self, room_id: str, ref: int | None, *, tx: Tx) -> EventRef | None:
        """What a follow-up can reply to: an earlier message's event id, its pending row, or nothing.

        Nothing when there is no earlier message, it failed, its row was
        pruned or it is in another room: a reply to those would fail, and the
        follow-up (a recovery after an alarm, a backup's next outcome) must
        get out regardless. Read in the caller's transaction ``tx``.
        """
        if ref is None:
            return None
        row = await self._repo.get_in(tx, OutboxId(ref))
        if row is None or row.room_id != room_id:
            return None
        if row.state is OutboxState.SENT and row.event_id is not None:
            return row.event_id
        if row.state is OutboxState.PENDING:
            return row.id
        return None

    async def event_id(self, outbox_id: OutboxId) -> str | None:
        """The event id of a sent row; None while pending, if failed, or if unknown."""
        row = await self._repo.get(outbox_id)
        return None if row is None else row.event_id

    async def state(self, outbox_id: OutboxId) -> OutboxState | None:
        """The row's delivery state, or None if there is no such row."""
        row = await self._repo.get(outbox_id)
        return None if row is None else row.state

    # The timeout is a parameter, not asyncio.timeout(), because "not sent in
    # time" is an answer (None) here, not an error.
    async def wait_sent(self, outbox_id: OutboxId, timeout: float) -> str | None:  # noqa: ASYNC109
        """Wait up to ``timeout`` seconds for the row to be sent; its event id, or None.

        Returns None at once if the row failed for good. Polls the store
        (starting at 10 ms, at most every 250 ms): a convenience for tests and
        commands, not for hot paths.
        """
        deadline = time.monotonic() + timeout
        interval = 0.01
        while True:
            row = await self._repo.get(outbox_id)
            if row is None or row.state is OutboxState.FAILED:
                return None
            if row.state is OutboxState.SENT:
                return row.event_id
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(interval, remaining))
            interval = min(interval * 2, _WAIT_SENT_MAX_POLL_S)

    async def stats(self) -> OutboxStats:
        """How many rows wait, and how long the oldest has waited."""
        pending = await self._repo.pending_stats()
        age = 0.0 if pending.oldest_created_at is None else self._clock() - pending.oldest_created_at
        return OutboxStats(depth=pending.depth, oldest_age_s=max(0.0, age))

    async def send_load(self, since: float, limit: int, *, tx: Tx | None = None) -> SendLoad:
        """How many rows wait, and when rows were sent after ``since`` (at most the newest ``limit``).

        What a producer of rate-limited messages needs to estimate when a new
        event would go out. Two small queries on one connection: a webhook's hot
        path may ask.
        """
        if tx is not None:
            return await self._repo.send_load(tx, since, limit)
        async with self._db.transaction() as conn:
            return await self._repo.send_load(conn, since, limit)

    async def prune(self, settled_before: float) -> int:
        """Delete sent/failed rows settled before ``settled_before`` (epoch seconds).

        Keep references you need for long (an alert group's message to edit
        later) as event ids from ``event_id()``: a pruned row's OutboxId no
        longer resolves.
        """
        return await self._repo.prune(settled_before)

    async def _enqueue(
        self,
        room_id: str,
        kind: OutboxKind,
        payload: dict[str, Any],
        *,
        target: EventRef | None = None,
        root: EventRef | None = None,
        tx: Tx | None,
    ) -> OutboxId:
        check_room(room_id)
        check_size(kind, payload, target=target, root=root)
        async with self._db.transaction(tx) as conn:
            stored_target = await self._stored_ref(conn, room_id, target)
            stored_root = await self._stored_ref(conn, room_id, root)
            outbox_id = await self._insert(conn, room_id, kind, payload, stored_target, stored_root)
        self._enqueued(outbox_id, kind, room_id)
        return outbox_id

    async def _insert(
        self,
        conn: Tx,
        room_id: str,
        kind: OutboxKind,
        payload: dict[str, Any],
        target: Ref,
        root: Ref,
    ) -> OutboxId:
        new = NewOutboxRow(
            room_id=room_id,
            kind=kind,
            payload=payload,
            txn_id=uuid.uuid4().hex,
            created_at=self._clock(),
            target=target,
            root=root,
        )
        return await self._repo.insert(conn, new)

    def _enqueued(self, outbox_id: OutboxId, kind: OutboxKind, room_id: str) -> None:
        log.debug("outbox %d queued: %s in %s", outbox_id, kind.value, room_id)
        if self.on_enqueued is not None:
            self.on_enqueued()

    async def _stored_ref(self, conn: Tx, room_id: str, ref: EventRef | None) -> Ref:
        """Validate a reference and store it as an event id when one is already known."""
        if ref is None:
            return Ref()
        if isinstance(ref, str):
            if not ref.startswith("$"):
                raise ValueError("an event reference must be an event id ($…) or an OutboxId")
            return Ref(event_id=ref)
        if type(ref) is not int:  # not isinstance: a bool is an int too
            raise TypeError("an event reference must be an event id ($…) or an OutboxId")
        row = await self._repo.get_in(conn, ref)
        if row is None:
            raise ValueError(f"outbox row {ref} does not exist (pruned?)")
        # The sender waits for a target of the same room to be settled before
        # it starts the dependent row; across rooms there is no such wait.
        if row.room_id != room_id:
            raise ValueError(f"outbox row {ref} belongs to another room")
        if row.state is OutboxState.SENT and row.event_id is not None:
            return Ref(event_id=row.event_id)
        return Ref(outbox_id=row.id)
