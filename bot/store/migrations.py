"""Schema migrations: an ordered list of functions keyed by the store's schema version.

The schema version is the number of migrations applied: SQLite's
``PRAGMA user_version``, or on PostgreSQL the one row of ``readybot_schema``
(``bot.store.postgres``). Migrations are written in SQLite's spelling and run
unchanged on both backends (``bot.store.postgres.translate``). Migration
``N`` (1-based) is ``migrations[N - 1]``; it runs in the same transaction that
sets ``user_version = N``, so a crash leaves either the old or the new schema,
never half of one. Append new migrations; never edit or reorder shipped ones.

This module is the mechanism and the core tables (kv, audit, handled events,
outbox). The ordered list, with each capability's tables, is assembled by the
composition root (``bot.schema.MIGRATIONS``) and handed to ``Database.open``:
the store imports no capability.

Two processes starting together (two replicas on one PostgreSQL database)
migrate once: each migration's transaction holds the write lock (BEGIN
IMMEDIATE; on PostgreSQL the advisory lock every write transaction takes) and
re-reads the version under it, so the second process finds the work done.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from bot.store.tx import Tx

if TYPE_CHECKING:
    from bot.store.database import Database

log = logging.getLogger(__name__)

Migration = Callable[[Tx], Awaitable[None]]


class SchemaTooNewError(RuntimeError):
    """The store was written by a newer readybot; running older code on it could corrupt it."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"store schema version {found} is newer than this readybot supports ({known}); "
            "upgrade readybot or restore a store written by this version"
        )
        self.found = found
        self.known = known


async def v1_initial(conn: Tx) -> None:
    # No IF NOT EXISTS: running a migration twice is a bug and must be loud.
    await conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    await conn.execute(
        """
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            room_id TEXT,
            event_id TEXT,
            action TEXT NOT NULL,
            args TEXT,
            outcome TEXT NOT NULL,
            detail TEXT
        )
        """
    )
    await conn.execute("CREATE INDEX audit_at ON audit (at)")
    await conn.execute("CREATE TABLE handled_events (event_id TEXT PRIMARY KEY, at REAL NOT NULL)")
    await conn.execute("CREATE INDEX handled_events_at ON handled_events (at)")
    await conn.execute(
        """
        CREATE TABLE outbox (
            -- AUTOINCREMENT: ids are never reused after a prune, so an
            -- OutboxId held by a caller can never point at a different row.
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            room_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('message', 'reply', 'thread', 'edit', 'reaction')),
            -- JSON: the message content (message/reply/thread), the new
            -- content (edit) or {"key": ...} (reaction). Relations are added
            -- at send time, once every referenced event id is known.
            payload TEXT NOT NULL,
            -- Each reference is either an event id or an earlier row of the
            -- same room, never both.
            target_event_id TEXT,
            target_outbox_id INTEGER REFERENCES outbox (id) ON DELETE SET NULL,
            root_event_id TEXT,
            root_outbox_id INTEGER REFERENCES outbox (id) ON DELETE SET NULL,
            -- The Matrix transaction id, fixed at enqueue: every resend of
            -- this row uses it, so the homeserver deduplicates.
            txn_id TEXT NOT NULL UNIQUE,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            refusals INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            created_at REAL NOT NULL,
            settled_at REAL,
            event_id TEXT,
            CHECK (target_event_id IS NULL OR target_outbox_id IS NULL),
            CHECK (root_event_id IS NULL OR root_outbox_id IS NULL),
            CHECK ((state = 'sent') = (event_id IS NOT NULL))
        )
        """
    )
    # The sender's hot queries: the head of each room's queue, and stats.
    await conn.execute("CREATE INDEX outbox_pending ON outbox (room_id, id) WHERE state = 'pending'")


async def v9_audit_sender_device(conn: Tx) -> None:
    """Which device a command came from, and whether its owner had cross-signed it (NULL: unknown)."""
    await conn.execute("ALTER TABLE audit ADD COLUMN sender_device TEXT")
    await conn.execute("ALTER TABLE audit ADD COLUMN cross_signed INTEGER")


async def schema_version(db: Database) -> int:
    """The number of migrations applied to the open store."""
    if db.dialect == "postgresql":
        async with db.transaction() as tx:
            return await _version_in(db, tx)
    row = await db.fetchone("PRAGMA user_version")
    return 0 if row is None else int(row[0])


async def _version_in(db: Database, tx: Tx) -> int:
    if db.dialect == "postgresql":
        from bot.store.postgres import PgConnection, read_version

        assert isinstance(tx, PgConnection)
        return await read_version(tx)
    cursor = await tx.execute("PRAGMA user_version")
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


async def _set_version(db: Database, tx: Tx, version: int) -> None:
    if db.dialect == "postgresql":
        from bot.store.postgres import PgConnection, write_version

        assert isinstance(tx, PgConnection)
        await write_version(tx, version)
        return
    # PRAGMA takes no bound parameters; version is our own int.
    await tx.execute(f"PRAGMA user_version = {int(version)}")


async def migrate(db: Database, migrations: Sequence[Migration]) -> int:
    """Apply the migrations the store lacks, one transaction each; return the final version."""
    current = await schema_version(db)
    if current > len(migrations):
        raise SchemaTooNewError(current, len(migrations))
    for version in range(current + 1, len(migrations) + 1):
        async with db.transaction() as tx:
            # Re-read under the write lock: another process may have migrated
            # the store since we looked.
            if await _version_in(db, tx) >= version:
                continue
            await migrations[version - 1](tx)
            await _set_version(db, tx, version)
        log.info("store migrated to schema version %d", version)
    return len(migrations)
