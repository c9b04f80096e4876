"""Heartbeat sources of the dead-man's switch, and its notices for the second channel.

Only SQL lives here; the rules are in ``bot.deadman.switch``. The up/down changes
are compare-and-set on ``state``, so however many checks or heartbeats race,
an outage is declared (and alarmed) once and recovered once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from bot.store.tx import Row, Tx

if TYPE_CHECKING:
    # Only for annotations: bot.store.database imports the migrations, which import this module.
    from bot.store.database import Database

_MAX_ERROR_CHARS = 300


class SourceState(StrEnum):
    UP = "up"
    DOWN = "down"


class NoticeKind(StrEnum):
    ALARM = "alarm"
    RECOVERY = "recovery"


class NoticeState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


async def migrate_heartbeats(conn: Tx) -> None:
    """Schema of the dead-man's switch (appended to ``bot.schema.MIGRATIONS``)."""
    await conn.execute(
        """
        CREATE TABLE deadman_sources (
            source TEXT PRIMARY KEY,
            -- The last heartbeat; NULL for an expected source never heard from.
            last_seen REAL,
            state TEXT NOT NULL CHECK (state IN ('up', 'down')),
            -- When the state last changed (for 'down': when the alarm was raised).
            state_since REAL NOT NULL,
            -- The current or last outage: since when the source was silent,
            -- and the alarm messages ({room_id: outbox id}) a recovery replies to.
            silent_since REAL,
            alarm_refs TEXT,
            outages INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    await conn.execute(
        """
        CREATE TABLE deadman_notices (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            source TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('alarm', 'recovery')),
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            settled_at REAL
        )
        """
    )
    await conn.execute("CREATE INDEX deadman_notices_pending ON deadman_notices (id) WHERE state = 'pending'")


@dataclass(frozen=True, slots=True)
class SourceRecord:
    source: str
    last_seen: float | None
    state: SourceState
    state_since: float
    silent_since: float | None
    alarm_refs: dict[str, int]
    outages: int


@dataclass(frozen=True, slots=True)
class Notice:
    id: int
    source: str
    kind: NoticeKind
    title: str
    body: str
    created_at: float
    state: NoticeState
    attempts: int
    last_error: str | None
    settled_at: float | None


_SOURCE_COLUMNS = "source, last_seen, state, state_since, silent_since, alarm_refs, outages"
_MARK_UP = (
    "UPDATE deadman_sources SET state = 'up', state_since = ?, last_seen = ?"  # noqa: S608 (constant columns)
    f" WHERE source = ? AND state = 'down' RETURNING {_SOURCE_COLUMNS}"
)
_NOTICE_COLUMNS = "id, source, kind, title, body, created_at, state, attempts, last_error, settled_at"


def _source(row: Row) -> SourceRecord:
    refs = json.loads(row["alarm_refs"]) if row["alarm_refs"] else {}
    return SourceRecord(
        source=row["source"],
        last_seen=row["last_seen"],
        state=SourceState(row["state"]),
        state_since=row["state_since"],
        silent_since=row["silent_since"],
        alarm_refs={str(room): int(ref) for room, ref in refs.items()},
        outages=row["outages"],
    )


def _notice(row: Row) -> Notice:
    return Notice(
        id=row["id"],
        source=row["source"],
        kind=NoticeKind(row["kind"]),
        title=row["title"],
        body=row["body"],
        created_at=row["created_at"],
        state=NoticeState(row["state"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
        settled_at=row["settled_at"],
    )


async def _one(conn: Tx, sql: str, params: tuple[object, ...]) -> Row | None:
    cursor = await conn.execute(sql, params)
    try:
        row: Row | None = await cursor.fetchone()
        return row
    finally:
        await cursor.close()


class HeartbeatRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def all(self) -> list[SourceRecord]:
        rows = await self._db.fetchall(f"SELECT {_SOURCE_COLUMNS} FROM deadman_sources ORDER BY source")  # noqa: S608 (constant columns)
        return [_source(row) for row in rows]

    async def get(self, source: str) -> SourceRecord | None:
        row = await self._db.fetchone(
            f"SELECT {_SOURCE_COLUMNS} FROM deadman_sources WHERE source = ?",  # noqa: S608
            (source,),
        )
        return None if row is None else _source(row)

    async def ensure(self, conn: Tx, source: str, at: float) -> None:
        """Watch ``source`` from ``at`` even though it has not beaten yet; no-op if known."""
        await conn.execute(
            "INSERT OR IGNORE INTO deadman_sources (source, last_seen, state, state_since)"
            " VALUES (?, NULL, 'up', ?)",
            (source, at),
        )

    async def beat(self, conn: Tx, source: str, at: float) -> None:
        """Record a heartbeat of an up (or new) source; never moves last_seen backwards."""
        await conn.execute(
            "INSERT INTO deadman_sources (source, last_seen, state, state_since) VALUES (?, ?, 'up', ?)"
            " ON CONFLICT (source) DO UPDATE SET"
            # max() of two values is GREATEST in PostgreSQL: CASE reads the same in both.
            " last_seen = CASE WHEN deadman_sources.last_seen > excluded.last_seen"
            " THEN deadman_sources.last_seen ELSE excluded.last_seen END",
            (source, at, at),
        )

    async def mark_down(
        self,
        conn: Tx,
        source: str,
        *,
        at: float,
        silent_since: float,
        last_seen: float | None,
    ) -> bool:
        """Declare an up source down if its last heartbeat is still ``last_seen``.

        False if it was not up, or a heartbeat arrived since the caller looked.
        """
        cursor = await conn.execute(
            "UPDATE deadman_sources SET state = 'down', state_since = ?, silent_since = ?,"
            " alarm_refs = NULL, outages = outages + 1"
            # Null-safe equality spelled so both read it (SQLite's IS is
            # PostgreSQL's IS NOT DISTINCT FROM).
            " WHERE source = ? AND state = 'up' AND (last_seen = ? OR (last_seen IS NULL AND ? IS NULL))",
            (at, silent_since, source, last_seen, last_seen),
        )
        return cursor.rowcount == 1

    async def forget(self, conn: Tx, source: str) -> SourceRecord | None:
        """Remove a source (its notices stay: they are the record of what was sent); the removed row."""
        cursor = await conn.execute(
            f"DELETE FROM deadman_sources WHERE source = ? RETURNING {_SOURCE_COLUMNS}",  # noqa: S608 (constant columns)
            (source,),
        )
        row = await cursor.fetchone()
        await cursor.close()
        return None if row is None else _source(row)

    async def set_alarm_refs(self, conn: Tx, source: str, refs: dict[str, int]) -> None:
        await conn.execute(
            "UPDATE deadman_sources SET alarm_refs = ? WHERE source = ?", (json.dumps(refs), source)
        )

    async def mark_up(self, conn: Tx, source: str, at: float) -> SourceRecord | None:
        """A heartbeat from a down source: up again. The record after the change, or None if it was not down.

        ``silent_since`` and ``alarm_refs`` are kept: they describe the outage
        that just ended, for the recovery message and ``!watchdog``.
        """
        row = await _one(
            conn,
            _MARK_UP,
            (at, at, source),
        )
        return None if row is None else _source(row)


class NoticeRepo:
    """Alarms and recoveries for the second channel, kept until sent (or given up)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, conn: Tx, source: str, kind: NoticeKind, title: str, body: str, at: float) -> int:
        cursor = await conn.execute(
            "INSERT INTO deadman_notices (source, kind, title, body, created_at) VALUES (?, ?, ?, ?, ?)"
            " RETURNING id",
            (source, kind.value, title, body, at),
        )
        row = await cursor.fetchone()
        assert row is not None  # an INSERT … RETURNING always returns its row
        return int(row["id"])

    async def pending(self) -> list[Notice]:
        rows = await self._db.fetchall(
            f"SELECT {_NOTICE_COLUMNS} FROM deadman_notices WHERE state = 'pending' ORDER BY id"  # noqa: S608
        )
        return [_notice(row) for row in rows]

    async def latest(self, source: str) -> Notice | None:
        """The newest notice of ``source``, whatever its state."""
        row = await self._db.fetchone(
            f"SELECT {_NOTICE_COLUMNS} FROM deadman_notices WHERE source = ? ORDER BY id DESC LIMIT 1",  # noqa: S608
            (source,),
        )
        return None if row is None else _notice(row)

    async def all(self) -> list[Notice]:
        rows = await self._db.fetchall(f"SELECT {_NOTICE_COLUMNS} FROM deadman_notices ORDER BY id")  # noqa: S608
        return [_notice(row) for row in rows]

    async def settle(
        self, notice_id: int, state: NoticeState, at: float, *, error: str | None = None
    ) -> bool:
        """Mark a pending notice sent or failed; False if it was no longer pending."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE deadman_notices SET state = ?, settled_at = ?, attempts = attempts + 1,"
                " last_error = coalesce(?, last_error) WHERE id = ? AND state = 'pending'",
                (state.value, at, None if error is None else error[:_MAX_ERROR_CHARS], notice_id),
            )
            return cursor.rowcount == 1

    async def record_failure(self, notice_id: int, error: str) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE deadman_notices SET attempts = attempts + 1, last_error = ?"
                " WHERE id = ? AND state = 'pending'",
                (error[:_MAX_ERROR_CHARS], notice_id),
            )
