"""The outbox table: durable outgoing Matrix events and their delivery state.

Only SQL lives here; the rules (ordering, retries, content shapes) are in
``bot.outbox``. State changes are compare-and-set on ``state = 'pending'`` so
a row is settled (sent or failed) exactly once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NewType

from bot.store.database import Database
from bot.store.tx import Row, Tx

OutboxId = NewType("OutboxId", int)

_MAX_ERROR_CHARS = 500


class OutboxKind(StrEnum):
    MESSAGE = "message"
    REPLY = "reply"
    THREAD = "thread"
    EDIT = "edit"
    REACTION = "reaction"


class OutboxState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference stored on a row: an event id, or an earlier row of the same room."""

    event_id: str | None = None
    outbox_id: OutboxId | None = None


@dataclass(frozen=True, slots=True)
class NewOutboxRow:
    room_id: str
    kind: OutboxKind
    payload: dict[str, Any]
    txn_id: str
    created_at: float
    target: Ref = Ref()
    root: Ref = Ref()


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: OutboxId
    room_id: str
    kind: OutboxKind
    payload: dict[str, Any]
    target: Ref
    root: Ref
    txn_id: str
    state: OutboxState
    attempts: int
    refusals: int
    last_error: str | None
    created_at: float
    settled_at: float | None
    event_id: str | None


@dataclass(frozen=True, slots=True)
class SendLoad:
    pending: int
    """Rows waiting to be sent."""
    sent_at: list[float]
    """When rows were sent (epoch seconds), oldest first."""


@dataclass(frozen=True, slots=True)
class PendingStats:
    depth: int
    oldest_created_at: float | None


_COLUMNS = (
    "id, room_id, kind, payload, target_event_id, target_outbox_id, root_event_id, root_outbox_id,"
    " txn_id, state, attempts, refusals, last_error, created_at, settled_at, event_id"
)


def _ref(event_id: str | None, outbox_id: int | None) -> Ref:
    return Ref(event_id, None if outbox_id is None else OutboxId(outbox_id))


def _row(row: Row) -> OutboxRow:
    return OutboxRow(
        id=OutboxId(row["id"]),
        room_id=row["room_id"],
        kind=OutboxKind(row["kind"]),
        payload=json.loads(row["payload"]),
        target=_ref(row["target_event_id"], row["target_outbox_id"]),
        root=_ref(row["root_event_id"], row["root_outbox_id"]),
        txn_id=row["txn_id"],
        state=OutboxState(row["state"]),
        attempts=row["attempts"],
        refusals=row["refusals"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        settled_at=row["settled_at"],
        event_id=row["event_id"],
    )


class OutboxRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, conn: Tx, new: NewOutboxRow) -> OutboxId:
        """Insert a pending row inside the caller's open transaction ``conn``."""
        cursor = await conn.execute(
            "INSERT INTO outbox (room_id, kind, payload, target_event_id, target_outbox_id,"
            " root_event_id, root_outbox_id, txn_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                new.room_id,
                new.kind.value,
                json.dumps(new.payload, ensure_ascii=False, allow_nan=False),
                new.target.event_id,
                new.target.outbox_id,
                new.root.event_id,
                new.root.outbox_id,
                new.txn_id,
                new.created_at,
            ),
        )
        row = await cursor.fetchone()
        assert row is not None  # an INSERT … RETURNING always returns its row
        return OutboxId(int(row["id"]))

    async def get_in(self, conn: Tx, outbox_id: OutboxId) -> OutboxRow | None:
        """Read one row inside the caller's open transaction ``conn``."""
        cursor = await conn.execute(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (outbox_id,))  # noqa: S608 (constant column list)
        row = await cursor.fetchone()
        return None if row is None else _row(row)

    async def get(self, outbox_id: OutboxId) -> OutboxRow | None:
        row = await self._db.fetchone(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (outbox_id,))  # noqa: S608
        return None if row is None else _row(row)

    async def head(self, room_id: str) -> OutboxRow | None:
        """The room's oldest pending row: the only one that may be sent now."""
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM outbox WHERE room_id = ? AND state = 'pending' ORDER BY id LIMIT 1",  # noqa: S608
            (room_id,),
        )
        return None if row is None else _row(row)

    async def pending_in_room(self, room_id: str, limit: int) -> list[OutboxRow]:
        """The room's oldest ``limit`` pending rows, oldest first."""
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM outbox WHERE room_id = ? AND state = 'pending' ORDER BY id LIMIT ?",  # noqa: S608
            (room_id, limit),
        )
        return [_row(row) for row in rows]

    async def rooms_with_pending(self) -> list[str]:
        rows = await self._db.fetchall("SELECT DISTINCT room_id FROM outbox WHERE state = 'pending'")
        return [str(row["room_id"]) for row in rows]

    async def mark_sent(
        self, outbox_id: OutboxId, event_id: str, at: float, *, txn_id: str | None = None
    ) -> bool:
        """Record delivery; False if the row was no longer pending.

        With ``txn_id``: also False (the row stays pending) if the row's txn
        id changed since, i.e. its content was superseded while being sent.
        """
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE outbox SET state = 'sent', event_id = ?, settled_at = ?, attempts = attempts + 1"
                " WHERE id = ? AND state = 'pending' AND (? IS NULL OR txn_id = ?)",
                (event_id, at, outbox_id, txn_id, txn_id),
            )
            return cursor.rowcount == 1

    async def supersede_edit(
        self,
        conn: Tx,
        room_id: str,
        target_row: OutboxId | None,
        target_event_id: str | None,
        payload: dict[str, Any],
        txn_id: str,
    ) -> OutboxId | None:
        """Give the newest pending edit of a target new content and txn id (in ``conn``'s transaction).

        The target is matched by row or by event id (either may be None).
        Returns the edit's id, or None when no edit of that target is pending.
        """
        # The last clause finds an edit queued against the target's row when
        # the caller names the target by its event id (a primary-key lookup
        # per pending edit of the room, which the partial index lists).
        cursor = await conn.execute(
            "UPDATE outbox SET payload = ?, txn_id = ? WHERE id = ("
            " SELECT e.id FROM outbox e WHERE e.room_id = ? AND e.kind = 'edit' AND e.state = 'pending'"
            " AND (e.target_outbox_id = ? OR e.target_event_id = ? OR EXISTS ("
            "  SELECT 1 FROM outbox t WHERE t.id = e.target_outbox_id AND t.event_id = ?))"
            " ORDER BY e.id DESC LIMIT 1)"
            " RETURNING id",
            (
                json.dumps(payload, ensure_ascii=False, allow_nan=False),
                txn_id,
                room_id,
                target_row,
                target_event_id,
                target_event_id,
            ),
        )
        row = await cursor.fetchone()
        await cursor.close()
        return None if row is None else OutboxId(row["id"])

    async def rewrite_queued_message(
        self,
        conn: Tx,
        room_id: str,
        outbox_id: OutboxId,
        payload: dict[str, Any],
        *,
        behind: int = 1,
    ) -> bool:
        """Replace the payload of a pending message row with at least ``behind`` pending rows before it."""
        cursor = await conn.execute(
            "UPDATE outbox SET payload = ? WHERE id = ? AND room_id = ? AND kind = 'message'"
            # Never a row whose send began (before a restart): its txn id stays,
            # so the content found in the room must be the content it holds.
            " AND state = 'pending' AND send_began_at IS NULL"
            " AND (SELECT COUNT(*) FROM (SELECT 1 FROM outbox o"
            "  WHERE o.room_id = outbox.room_id AND o.state = 'pending' AND o.id < outbox.id LIMIT ?)"
            " AS ahead) >= ?",
            (json.dumps(payload, ensure_ascii=False, allow_nan=False), outbox_id, room_id, behind, behind),
        )
        return cursor.rowcount == 1

    async def send_load(self, conn: Tx, since: float, limit: int) -> SendLoad:
        """Pending rows, and send times after ``since`` (newest ``limit``), read on ``conn``.

        The times come back as plain REAL columns: passing them through
        SQLite's JSON (json_group_array) keeps only 15 significant digits,
        which rounds an epoch time by ~10 µs, so a time at ``since`` could
        come back as newer than it and be counted as a send again.
        """
        (pending,) = await conn.execute_fetchall("SELECT COUNT(*) AS n FROM outbox WHERE state = 'pending'")
        sent = await conn.execute_fetchall(
            "SELECT settled_at FROM outbox WHERE state = 'sent' AND settled_at > ?"
            " ORDER BY settled_at DESC LIMIT ?",
            (since, limit),
        )
        return SendLoad(pending=int(pending["n"]), sent_at=sorted(float(row["settled_at"]) for row in sent))

    async def mark_failed(self, outbox_id: OutboxId, error: str, at: float) -> bool:
        """Give up on a row; False if it was no longer pending."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE outbox SET state = 'failed', last_error = ?, settled_at = ?"
                " WHERE id = ? AND state = 'pending'",
                (error[:_MAX_ERROR_CHARS], at, outbox_id),
            )
            return cursor.rowcount == 1

    async def record_failure(
        self, outbox_id: OutboxId, error: str, at: float, *, refused: bool, max_refusals: int
    ) -> OutboxState | None:
        """Count a failed attempt; a refusal that reaches ``max_refusals`` fails the row.

        Returns the row's state afterwards, or None if it was no longer pending.
        Counting in SQL keeps the refusal budget across restarts.
        """
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, refusals = refusals + ?, last_error = ?,"
                " state = CASE WHEN refusals + ? >= ? THEN 'failed' ELSE state END,"
                " settled_at = CASE WHEN refusals + ? >= ? THEN ? ELSE settled_at END"
                " WHERE id = ? AND state = 'pending' RETURNING state",
                (
                    int(refused),
                    error[:_MAX_ERROR_CHARS],
                    int(refused),
                    max_refusals,
                    int(refused),
                    max_refusals,
                    at,
                    outbox_id,
                ),
            )
            row = await cursor.fetchone()
            await cursor.close()
        return None if row is None else OutboxState(row["state"])

    async def pending_stats(self) -> PendingStats:
        row = await self._db.fetchone(
            "SELECT COUNT(*) AS depth, MIN(created_at) AS oldest FROM outbox WHERE state = 'pending'"
        )
        assert row is not None  # an aggregate always returns one row
        return PendingStats(depth=int(row["depth"]), oldest_created_at=row["oldest"])

    async def prune(self, settled_before: float) -> int:
        """Delete rows settled before ``settled_before``, keeping any a pending row still refers to."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "DELETE FROM outbox WHERE state != 'pending' AND settled_at < ?"
                " AND id NOT IN (SELECT target_outbox_id FROM outbox"
                "   WHERE state = 'pending' AND target_outbox_id IS NOT NULL"
                "   UNION SELECT root_outbox_id FROM outbox"
                "   WHERE state = 'pending' AND root_outbox_id IS NOT NULL)",
                (settled_before,),
            )
            return cursor.rowcount
