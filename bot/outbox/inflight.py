"""Rows that may already have gone out: marked before their first send, looked for after a restart.

A row is *begun* once a send of it starts (``outbox.send_began_at``, set
before the request leaves). If the process dies before it records the answer,
the row is still pending after the restart, and it may or may not be in the
room. With the same device and within the homeserver's memory of transaction
ids, a resend with the row's txn id would be deduplicated; but a new device
(a wiped crypto store, or another replica taking the lead) has another
transaction-id space, and Synapse forgets transaction ids after a while. So a
row begun by an earlier process is first looked for in the room's recent
history: every event the outbox sends carries its row's txn id
(``bot.outbox.events.with_marker``), beside the ciphertext too in an
encrypted room, because the new device may hold no key to the old one's
messages. Found: the row is recorded as sent with that event id (so edits
and replies waiting on it get it); not found: it is sent.

The look-back is bounded: the bot's own events only (a ``senders`` filter),
back to a little before the row was first begun (its event cannot be older),
at most ``MAX_PAGES`` pages. When that bound is hit before the row's time,
nobody can tell: the row is sent again and the log says it may repeat.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bot.outbox.events import marked_txn
from bot.store.leadership import fence_check
from bot.store.tx import Tx

if TYPE_CHECKING:
    from bot.outbox.repo import OutboxId
    from bot.store.database import Database
    from bot.store.leadership import Fence

log = logging.getLogger(__name__)

ORIGIN_KEY = "outbox.origin"
# Events per page and pages per room: the look-back covers up to 2,000 of the bot's own events.
PAGE_SIZE = 100
MAX_PAGES = 20
# The homeserver's clock and ours may differ: look this much further back.
CLOCK_SKEW_S = 300.0


async def migrate_outbox_in_flight(conn: Tx) -> None:
    """When a send of each row first began (NULL: never); appended to ``bot.schema.MIGRATIONS``.

    Portable SQL (SQLite and PostgreSQL): one nullable column, no default.
    """
    await conn.execute("ALTER TABLE outbox ADD COLUMN send_began_at REAL")


class InFlightRepo:
    """The begun mark of outbox rows, and this installation's origin id (in the kv table)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def begin(self, outbox_id: OutboxId, at: float, *, fence: Fence | None = None) -> float | None:
        """Mark the row begun at ``at``; when it was begun before (by an earlier process), that time.

        The earliest time is kept: it bounds how far back its event can be.
        With ``fence`` (ha.enabled) the claim is this replica's only while it
        leads: ``LeadershipLost`` otherwise, checked in the same transaction.
        """
        async with self._db.transaction() as conn:
            await fence_check(fence, conn)
            cursor = await conn.execute("SELECT send_began_at FROM outbox WHERE id = ?", (outbox_id,))
            row = await cursor.fetchone()
            await cursor.close()
            if row is None:
                return None
            earlier = row["send_began_at"]
            if earlier is None:
                await conn.execute(
                    "UPDATE outbox SET send_began_at = ? WHERE id = ? AND send_began_at IS NULL",
                    (at, outbox_id),
                )
                return None
            return float(earlier)

    async def origin(self) -> str:
        """This installation's id, made once and kept (replicas sharing a store share it)."""
        async with self._db.transaction() as conn:
            # DO NOTHING, then read: two replicas starting at once agree on the first one's id.
            await conn.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (ORIGIN_KEY, uuid.uuid4().hex[:12]),
            )
            cursor = await conn.execute("SELECT value FROM kv WHERE key = ?", (ORIGIN_KEY,))
            row = await cursor.fetchone()
            await cursor.close()
        assert row is not None  # just inserted or already there
        return str(row["value"])


@runtime_checkable
class HistoryTransport(Protocol):
    """A transport that can page back through the bot's own events in a room."""

    async def own_events(
        self, room_id: str, page: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the bot's own events, newest first, and the next (older) page's token.

        ``page`` None starts at the room's newest event; the token returned is
        None at the room's beginning. Raises ``RateLimited``,
        ``TransientSendError`` or ``PermanentSendError``.
        """
        ...


class Lookup(StrEnum):
    FOUND = "found"
    ABSENT = "absent"
    UNKNOWN = "unknown"
    """The look-back ended (page bound) before the row's time: it may or may not be there."""


@dataclass(slots=True)
class _RoomHistory:
    """How far back one room was read, and every marked txn id seen so far."""

    seen: dict[str, str] = field(default_factory=dict)
    next_page: str | None = None
    started: bool = False
    at_beginning: bool = False
    oldest_ms: int | None = None
    pages: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SentLookup:
    """Looks for rows in the rooms' recent history; each room is read back once, as far as needed."""

    def __init__(self, transport: HistoryTransport) -> None:
        self._transport = transport
        self._rooms: dict[str, _RoomHistory] = {}

    async def find(self, room_id: str, txn_id: str, began_at: float) -> tuple[Lookup, str | None]:
        """Whether an event carrying ``txn_id`` is in the room, and its event id when it is."""
        history = self._rooms.setdefault(room_id, _RoomHistory())
        async with history.lock:
            while True:
                if txn_id in history.seen:
                    return Lookup.FOUND, history.seen[txn_id]
                if history.at_beginning:
                    return Lookup.ABSENT, None
                if history.oldest_ms is not None and history.oldest_ms / 1000 < began_at - CLOCK_SKEW_S:
                    return Lookup.ABSENT, None
                if history.pages >= MAX_PAGES:
                    return Lookup.UNKNOWN, None
                await self._read_page(room_id, history)

    async def _read_page(self, room_id: str, history: _RoomHistory) -> None:
        events, next_page = await self._transport.own_events(
            room_id, history.next_page if history.started else None, PAGE_SIZE
        )
        history.started = True
        history.pages += 1
        for event in events:
            txn = marked_txn(event)
            event_id = event.get("event_id")
            if txn is not None and isinstance(event_id, str):
                history.seen.setdefault(txn, event_id)
            ts = event.get("origin_server_ts")
            if isinstance(ts, int) and (history.oldest_ms is None or ts < history.oldest_ms):
                history.oldest_ms = ts
        history.next_page = next_page
        # A filtered page may be empty and still have older pages behind it.
        if next_page is None:
            history.at_beginning = True
