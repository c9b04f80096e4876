"""The durable outbox: every outgoing Matrix event is queued here, then sent.

``Outbox`` is the producer side: it commits a row before returning, so a
webhook can be answered 2xx as soon as ``send_message`` returns. ``OutboxSender``
is the consumer: one task per room with pending rows sends that room's rows in
id order (rooms proceed independently), retrying with back-off while the
homeserver is unreachable, pausing every room on a 429 (the rate limit is per
user), and giving up on a row only after repeated permanent refusals.

Exactly-once delivery rests on the Matrix transaction id: each row gets a
random txn id at enqueue and every attempt reuses it, so if the bot dies
after the homeserver accepted an event but before the row was marked sent,
the resend after restart is deduplicated by the homeserver (same device, same
txn id) and returns the original event id. This needs the bot to keep its
device id across restarts, which it does.

Relations (reply, thread, edit, reaction) may point at an earlier row of the
same room by its ``OutboxId`` instead of an event id; the reference is
resolved when the dependent row is sent, which per-room order guarantees is
after its target was settled.

Under a rate limit every event costs budget, and only a message's newest
content matters: ``edit(..., supersede=True)`` replaces a still-pending edit
of the same message, and ``rewrite_pending`` changes a message that is queued
behind others (so certainly not being sent). The sender records a send only
if the row's txn id is unchanged, so an edit superseded while on its way is
sent again with the newer content.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import aiosqlite

from bot.metrics import Metrics
from bot.outbox.media import OutboxMediaRepo
from bot.outbox.repo import (
    NewOutboxRow,
    OutboxId,
    OutboxKind,
    OutboxRepo,
    OutboxRow,
    OutboxState,
    Ref,
    SendLoad,
)
from bot.store.database import Database
from config.settings import OutboxSettings

__all__ = [
    "MAX_CONTENT_BYTES",
    "EventRef",
    "EventTooLargeError",
    "MatrixTransport",
    "MediaTransport",
    "Outbox",
    "OutboxId",
    "OutboxKind",
    "OutboxSender",
    "OutboxState",
    "OutboxStats",
    "PermanentSendError",
    "RateLimited",
    "SendError",
    "SendLoad",
    "TransientSendError",
    "build_event",
]

log = logging.getLogger(__name__)

# An event id ("$…") or the OutboxId of an earlier row in the same room.
EventRef = str | OutboxId

# A Matrix event (content plus envelope, signatures, hashes) must stay under
# 65,536 bytes; keep the content comfortably below. Encryption inflates the
# content by about 4/3 (base64), so renderers should aim far lower.
MAX_CONTENT_BYTES = 60_000
# Media (a chart) are kept in the store until sent: bound them well below
# any homeserver's upload limit (Synapse's default is 50 MB).
MAX_MEDIA_BYTES = 8 * 1024 * 1024
# The longest event id the spec allows, used to size content before the real
# ids of referenced rows are known.
_PLACEHOLDER_EVENT_ID = "$" + "x" * 254

_INITIAL_BACKOFF_S = 0.5
_WAIT_SENT_MAX_POLL_S = 0.25


class SendError(Exception):
    """A send attempt failed. Messages must never contain the event's content."""


class RateLimited(SendError):
    """429 M_LIMIT_EXCEEDED: every room waits ``retry_after_s`` before the next attempt."""

    def __init__(self, retry_after_s: float, message: str = "rate limited") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TransientSendError(SendError):
    """The homeserver was unreachable, timed out or answered 5xx: retry with back-off."""


class PermanentSendError(SendError):
    """The homeserver refused the event (4xx other than 429), e.g. the bot is not in the room."""


class EventTooLargeError(ValueError):
    """The content would make an event larger than Matrix allows; truncate before enqueueing."""


@runtime_checkable
class MediaTransport(Protocol):
    """A transport that can also upload to the homeserver's media repository (for image rows)."""

    def room_encrypted(self, room_id: str) -> bool:
        """Whether the room is end-to-end encrypted (then media are uploaded encrypted)."""
        ...

    async def upload(self, data: bytes, content_type: str, filename: str, *, encrypt: bool) -> dict[str, Any]:
        """Upload; ``{"url": mxc}``, or ``{"file": {url, key, iv, hashes, v}}`` when encrypted.

        Raises ``RateLimited``, ``TransientSendError`` or ``PermanentSendError``.
        """
        ...


class MatrixTransport(Protocol):
    async def send_event(self, room_id: str, event_type: str, content: dict[str, Any], txn_id: str) -> str:
        """Send one event with the given txn id and return its event id.

        Raises ``RateLimited``, ``TransientSendError`` or ``PermanentSendError``.
        """
        ...


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int
    """Rows waiting to be sent."""
    oldest_age_s: float
    """Age of the oldest waiting row in seconds; 0 when none waits."""


def build_event(
    kind: OutboxKind, payload: dict[str, Any], target: str | None = None, root: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The event type and content for a row, once its references are event ids.

    Pure: the same row always builds the same event, so a resend after a
    restart is byte-for-byte the event the homeserver may already hold.
    """
    content = json.loads(json.dumps(payload))  # a deep copy; the caller's dict stays untouched
    if kind is OutboxKind.MESSAGE:
        return "m.room.message", content
    if kind is OutboxKind.REPLY:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": _required(target)}}
        return "m.room.message", content
    if kind is OutboxKind.THREAD:
        thread_root = _required(root)
        # Without an explicit reply target, the in-reply-to is the fallback
        # that thread-unaware clients render; with one, it is a real reply.
        content["m.relates_to"] = {
            "rel_type": "m.thread",
            "event_id": thread_root,
            "is_falling_back": target is None,
            "m.in_reply_to": {"event_id": target or thread_root},
        }
        return "m.room.message", content
    if kind is OutboxKind.EDIT:
        return "m.room.message", _edit_content(content, _required(target))
    if kind is OutboxKind.REACTION:
        relates = {"rel_type": "m.annotation", "event_id": _required(target), "key": content["key"]}
        return "m.reaction", {"m.relates_to": relates}
    raise ValueError(f"unknown outbox kind {kind!r}")


def _edit_content(new: dict[str, Any], target: str) -> dict[str, Any]:
    # Relations cannot be changed by an edit; m.new_content must not carry one.
    new.pop("m.relates_to", None)
    content: dict[str, Any] = {"msgtype": new["msgtype"], "body": "* " + new["body"]}
    if "format" in new and "formatted_body" in new:
        content["format"] = new["format"]
        content["formatted_body"] = "* " + new["formatted_body"]
    content["m.new_content"] = new
    content["m.relates_to"] = {"rel_type": "m.replace", "event_id": target}
    return content


def _required(event_id: str | None) -> str:
    if event_id is None:
        raise ValueError("this kind of event needs a target")
    return event_id


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
    ) -> None:
        self._db = db
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
        tx: aiosqlite.Connection | None = None,
    ) -> OutboxId:
        """Queue an ``m.room.message``: plain, a reply, in a thread, or a reply within a thread."""
        _check_message_content(content)
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
        tx: aiosqlite.Connection | None = None,
    ) -> OutboxId:
        """Queue an edit (``m.replace``) of ``target``, the original event (not an earlier edit).

        With ``supersede``, an edit of the same target that is still pending
        gets this content instead (and a new txn id), keeping its place in
        the queue; its id is returned. Only the newest content of a message
        matters, and every event sent costs rate budget. If that edit was
        already on its way, the sender notices the changed txn id when it
        records the send and sends the newer content as well.
        """
        _check_message_content(new_content)
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
        tx: aiosqlite.Connection | None = None,
    ) -> OutboxId | None:
        """Give the still-pending edit of ``target`` this content (and a new txn id); None if none is pending.

        For a producer that would rather wait than queue another edit now.
        """
        _check_message_content(new_content)
        _check_room(room_id)
        _check_size(OutboxKind.EDIT, new_content, target=target, root=None)
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
        tx: aiosqlite.Connection | None = None,
    ) -> bool:
        """Give a queued message new content instead of queueing an edit of it; True if done.

        Only a plain message with an earlier pending row in its room
        qualifies: the sender sends a room's rows in order and reads the next
        only after settling the one before, so such a row is not on its way
        now and was never sent (not even before a restart). Its txn id stays.
        """
        _check_message_content(content)
        _check_room(room_id)
        _check_size(OutboxKind.MESSAGE, content, target=None, root=None)
        async with self._db.transaction(tx) as conn:
            done = await self._repo.rewrite_queued_message(conn, room_id, outbox_id, content)
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
        tx: aiosqlite.Connection | None = None,
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
        _check_room(room_id)
        _check_size(kind, content, target=reply_to, root=None)
        async with self._db.transaction(tx) as conn:
            target = await self._stored_ref(conn, room_id, reply_to)
            outbox_id = await self._insert(conn, room_id, kind, content, target, Ref())
            await self._media.insert(conn, outbox_id, data, content_type, filename)
        self._enqueued(outbox_id, kind, room_id)
        return outbox_id

    async def react(
        self, room_id: str, target: EventRef, key: str, *, tx: aiosqlite.Connection | None = None
    ) -> OutboxId:
        """Queue an ``m.reaction`` with ``key`` (e.g. an emoji) on ``target``."""
        if not isinstance(key, str) or not key:
            raise ValueError("a reaction key must be a non-empty string")
        return await self._enqueue(room_id, OutboxKind.REACTION, {"key": key}, target=target, tx=tx)

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

    async def send_load(
        self, since: float, limit: int, *, tx: aiosqlite.Connection | None = None
    ) -> SendLoad:
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
        tx: aiosqlite.Connection | None,
    ) -> OutboxId:
        _check_room(room_id)
        _check_size(kind, payload, target=target, root=root)
        async with self._db.transaction(tx) as conn:
            stored_target = await self._stored_ref(conn, room_id, target)
            stored_root = await self._stored_ref(conn, room_id, root)
            outbox_id = await self._insert(conn, room_id, kind, payload, stored_target, stored_root)
        self._enqueued(outbox_id, kind, room_id)
        return outbox_id

    async def _insert(
        self,
        conn: aiosqlite.Connection,
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

    async def _stored_ref(self, conn: aiosqlite.Connection, room_id: str, ref: EventRef | None) -> Ref:
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
        # Per-room order is what guarantees the target is settled before
        # the dependent row is sent; across rooms there is no such order.
        if row.room_id != room_id:
            raise ValueError(f"outbox row {ref} belongs to another room")
        if row.state is OutboxState.SENT and row.event_id is not None:
            return Ref(event_id=row.event_id)
        return Ref(outbox_id=row.id)


def _check_room(room_id: str) -> None:
    if not isinstance(room_id, str) or not room_id.startswith("!"):
        raise ValueError("room_id must be a room id (!…); resolve aliases before enqueueing")


def _check_message_content(content: dict[str, Any]) -> None:
    if not isinstance(content, dict):
        raise TypeError("content must be a dict")
    if not isinstance(content.get("msgtype"), str) or not isinstance(content.get("body"), str):
        raise ValueError("message content needs string msgtype and body")


def _check_size(kind: OutboxKind, payload: dict[str, Any], *, target: object, root: object) -> None:
    """Refuse content the homeserver would refuse for good, while the caller can still fix it."""
    placeholder_target = None if target is None else _PLACEHOLDER_EVENT_ID
    placeholder_root = None if root is None else _PLACEHOLDER_EVENT_ID
    try:
        _, content = build_event(kind, payload, placeholder_target, placeholder_root)
        encoded = json.dumps(content, ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"content is not valid JSON for Matrix: {type(exc).__name__}") from exc
    if len(encoded) > MAX_CONTENT_BYTES:
        raise EventTooLargeError(f"event content is {len(encoded)} bytes; the limit is {MAX_CONTENT_BYTES}")


class _Backoff:
    """Exponential back-off with a ceiling and a little jitter (so rooms do not retry in lockstep)."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._initial = initial_s
        self._max = max_s
        self._failures = 0

    def next_delay(self) -> float:
        base = min(self._max, self._initial * 2.0**self._failures)
        self._failures += 1
        # Jitter below the base only, so the configured ceiling holds.
        return base * random.uniform(0.8, 1.0)  # noqa: S311 (timing jitter, not security)


# Message types whose row may carry media to upload (bot.outbox.media).
_MEDIA_MSGTYPES = frozenset({"m.image", "m.file", "m.audio", "m.video"})


class _TargetFailedError(Exception):
    """A row this one relates to was never sent, so this one cannot be either."""


class OutboxSender:
    """Drains the outbox: one task per room with pending rows, all under ``run``."""

    def __init__(
        self,
        db: Database,
        transport: MatrixTransport,
        settings: OutboxSettings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] | None = None,
        initial_backoff_s: float = _INITIAL_BACKOFF_S,
    ) -> None:
        self._repo = OutboxRepo(db)
        self._media = OutboxMediaRepo(db)
        self._transport = transport
        self._settings = settings
        self._metrics = metrics
        self._clock = clock or db.clock
        self._initial_backoff_s = initial_backoff_s
        self._wake = asyncio.Event()
        self._workers: dict[str, asyncio.Task[None]] = {}
        # A 429 pauses every room until this time.monotonic() deadline.
        self._paused_until = 0.0
        self._oldest_pending_at: float | None = None

    def wake(self) -> None:
        """Something was enqueued: look for rooms with pending rows. Safe to call any time."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop`` is set, then cancel in-flight sends and return.

        Rows cut short stay pending and are resent (same txn id) by the next
        run. An unexpected error in a room task (e.g. the store failing) ends
        ``run`` with that error, so the supervisor restarts the bot.
        """
        # Evaluated at scrape time, so the age grows while nothing changes.
        self._metrics.outbox_oldest_age.set_function(self._oldest_age)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._wake_on(stop), name="outbox-stop")
            while not stop.is_set():
                self._wake.clear()
                await self._refresh_gauges()
                for room_id in await self._repo.rooms_with_pending():
                    if room_id not in self._workers:
                        self._workers[room_id] = group.create_task(
                            self._drain_room(room_id), name=f"outbox:{room_id}"
                        )
                await self._wake.wait()
            for task in list(self._workers.values()):
                task.cancel()

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _drain_room(self, room_id: str) -> None:
        try:
            while (row := await self._repo.head(room_id)) is not None:
                await self._deliver(row)
                await self._refresh_gauges()
        finally:
            self._workers.pop(room_id, None)
            # Defensive: have the supervisor look again, in case a row was
            # committed for this room after our last look. (Today no await
            # separates that look from the pop above, so it cannot happen.)
            self._wake.set()

    async def _deliver(self, row: OutboxRow) -> None:
        """Send one row until it is sent or has failed for good."""
        try:
            event_type, content = await self._build(row)
        except _TargetFailedError as exc:
            await self._give_up(row, str(exc))
            return
        except (KeyError, TypeError, ValueError) as exc:
            # A row that cannot be built never will be: do not block the room.
            log.exception("outbox %d (%s in %s) cannot be built", row.id, row.kind.value, row.room_id)
            await self._give_up(row, f"cannot build event: {type(exc).__name__}")
            return
        backoff = _Backoff(self._initial_backoff_s, self._settings.max_backoff_s)
        failures = 0
        retrying = False
        while True:
            await self._wait_rate_limit()
            # After a pause or back-off the row may have been superseded (a
            # newer edit took its place): then the room's loop reads it again
            # rather than spend an event of the rate budget on stale content.
            if retrying and await self._superseded(row):
                return
            retrying = True
            try:
                if content.get("msgtype") in _MEDIA_MSGTYPES:
                    content = await self._with_media(row, content)
                event_id = await self._transport.send_event(row.room_id, event_type, content, row.txn_id)
            except RateLimited as exc:
                self._pause(row, exc)
                continue
            except PermanentSendError as exc:
                failures += 1
                if await self._count_failure(row, exc, failures, refused=True):
                    return
            except Exception as exc:  # TransientSendError, or a transport bug: retry, never stall
                failures += 1
                if not isinstance(exc, TransientSendError):
                    log.exception("outbox %d: unexpected error from transport", row.id)
                if await self._count_failure(row, exc, failures, refused=False):
                    return
            else:
                # False when the row was superseded while on its way (a newer
                # edit replaced its content and txn id): it stays pending and
                # the room's loop sends the newer content next.
                await self._repo.mark_sent(row.id, event_id, self._clock(), txn_id=row.txn_id)
                self._metrics.messages_sent.labels(kind=row.kind.value).inc()
                log.debug("outbox %d sent as %s: %s in %s", row.id, event_id, row.kind.value, row.room_id)
                return
            await asyncio.sleep(backoff.next_delay())

    async def _with_media(self, row: OutboxRow, content: dict[str, Any]) -> dict[str, Any]:
        """The content with its uploaded media's ``url``/``file``, uploading first if not done yet."""
        media = await self._media.get(row.id)
        if media is None:
            return content  # media sent by reference (an mxc URL in the content already)
        uploaded = media.uploaded
        if uploaded is None:
            transport = self._transport
            if not isinstance(transport, MediaTransport):
                raise PermanentSendError("this transport cannot upload media")
            uploaded = await transport.upload(
                media.data,
                media.content_type,
                media.filename,
                encrypt=transport.room_encrypted(row.room_id),
            )
            # Recorded before the send: a retry (or a restart) reuses the upload.
            await self._media.set_uploaded(row.id, uploaded)
        return {**content, **uploaded}

    async def _superseded(self, row: OutboxRow) -> bool:
        """Whether the row changed (new content and txn id) or settled since it was read."""
        fresh = await self._repo.get(row.id)
        return fresh is None or fresh.state is not OutboxState.PENDING or fresh.txn_id != row.txn_id

    async def _build(self, row: OutboxRow) -> tuple[str, dict[str, Any]]:
        target = await self._resolve(row.target)
        root = await self._resolve(row.root)
        return build_event(row.kind, row.payload, target, root)

    async def _resolve(self, ref: Ref) -> str | None:
        """The event id a reference stands for, now that earlier rows of the room are settled."""
        if ref.event_id is not None or ref.outbox_id is None:
            return ref.event_id
        target = await self._repo.get(ref.outbox_id)
        if target is None or target.state is not OutboxState.SENT or target.event_id is None:
            state = "missing" if target is None else target.state.value
            raise _TargetFailedError(f"related outbox row {ref.outbox_id} is {state}")
        return target.event_id

    def _pause(self, row: OutboxRow, exc: RateLimited) -> None:
        # The limit is per user, so every room waits; never shorten a pause
        # another room's 429 already set. The floor keeps a server that says
        # "retry after 0" from turning this loop into a busy loop.
        retry_after = max(self._initial_backoff_s, exc.retry_after_s)
        self._paused_until = max(self._paused_until, time.monotonic() + retry_after)
        self._metrics.send_failures.labels(reason="rate_limited").inc()
        log.warning(
            "outbox %d in %s rate limited; all sending paused %.1f s", row.id, row.room_id, retry_after
        )

    async def _wait_rate_limit(self) -> None:
        # Sleeping to a deadline is not polling; loop because another room's
        # 429 may push the deadline further while we sleep.
        while (delay := self._paused_until - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)

    async def _count_failure(self, row: OutboxRow, exc: Exception, failures: int, *, refused: bool) -> bool:
        """Record a failed attempt; True if the row is settled (failed for good) and the room moves on.

        ``failures`` counts this row's failed attempts in this run; the log
        line is written on the 1st, 2nd, 4th, 8th, ... so an hour-long outage
        does not flood the log.
        """
        reason = "permanent" if refused else "transient"
        self._metrics.send_failures.labels(reason=reason).inc()
        error = f"{type(exc).__name__}: {exc}"
        state = await self._repo.record_failure(
            row.id,
            error,
            self._clock(),
            refused=refused,
            max_refusals=self._settings.max_attempts_permanent,
        )
        if state is OutboxState.PENDING:
            if failures & (failures - 1) == 0:  # a power of two
                log.warning(
                    "outbox %d (%s in %s) attempt failed (%s, %d so far), will retry",
                    row.id,
                    row.kind.value,
                    row.room_id,
                    type(exc).__name__,
                    failures,
                )
            return False
        if state is OutboxState.FAILED:
            self._metrics.messages_dropped.inc()
            log.error(
                "outbox %d (%s in %s) refused %d times (%s); giving up",
                row.id,
                row.kind.value,
                row.room_id,
                self._settings.max_attempts_permanent,
                error,
            )
        return True

    async def _give_up(self, row: OutboxRow, error: str) -> None:
        if await self._repo.mark_failed(row.id, error, self._clock()):
            self._metrics.messages_dropped.inc()
            log.error("outbox %d (%s in %s) failed: %s", row.id, row.kind.value, row.room_id, error)

    async def _refresh_gauges(self) -> None:
        pending = await self._repo.pending_stats()
        self._metrics.outbox_depth.set(pending.depth)
        self._oldest_pending_at = pending.oldest_created_at

    def _oldest_age(self) -> float:
        oldest = self._oldest_pending_at
        return 0.0 if oldest is None else max(0.0, self._clock() - oldest)
