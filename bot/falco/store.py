"""The Falco relay's live state: aggregates, digests and mutes.

Only SQL lives here; the rules are in ``bot.falco.events``. The relay is the
only writer; it keeps everything in memory and writes through, in the same
transaction as the outbox rows its decisions queue, so the store always holds
what every accepted event changed. Rows are deleted once closed and shown.

Ids of aggregates and digests come from one sequence the relay allocates
from (``falco_ids``), so a batch knows its new objects' final ids before it
writes them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.store.tx import Tx

if TYPE_CHECKING:
    # Only for annotations: bot.store.database imports the migrations, which import this module.
    from bot.store.database import Database


async def migrate_falco(conn: Tx) -> None:
    """Schema of the Falco relay (appended to ``bot.schema.MIGRATIONS``)."""
    await conn.execute(
        "CREATE TABLE falco_ids (id INTEGER PRIMARY KEY CHECK (id = 1), next_id INTEGER NOT NULL)"
    )
    await conn.execute("INSERT INTO falco_ids (id, next_id) VALUES (1, 1)")
    await conn.execute(
        """
        CREATE TABLE falco_digests (
            id INTEGER PRIMARY KEY,
            room_id TEXT NOT NULL,
            message_outbox_id INTEGER,
            message_event_id TEXT,
            -- JSON: window, dirty flag, when last flushed.
            state TEXT NOT NULL
        )
        """
    )
    await conn.execute(
        """
        CREATE TABLE falco_aggregates (
            id INTEGER PRIMARY KEY,
            room_id TEXT NOT NULL,
            -- Set when the aggregate is a line of a digest rather than its own message.
            digest_id INTEGER REFERENCES falco_digests (id) ON DELETE CASCADE,
            message_outbox_id INTEGER,
            message_event_id TEXT,
            -- JSON: key, rule, priority, count, first/last, window, nodes, last output, dirty flag.
            state TEXT NOT NULL
        )
        """
    )
    await conn.execute(
        """
        CREATE TABLE falco_mutes (
            -- The rule, case-folded with white space collapsed.
            rule_key TEXT PRIMARY KEY,
            ends_at REAL NOT NULL,
            -- JSON: the rule as typed, who and where, and the tally of muted events.
            state TEXT NOT NULL
        )
        """
    )


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """An aggregate (``digest_id`` may be set) or a digest (``digest_id`` is None) as stored."""

    id: int
    room_id: str
    digest_id: int | None
    message_outbox_id: int | None
    message_event_id: str | None
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MuteRecord:
    rule_key: str
    ends_at: float
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LoadedFalco:
    next_id: int
    aggregates: list[MessageRecord]
    digests: list[MessageRecord]
    mutes: list[MuteRecord]


@dataclass(frozen=True, slots=True)
class FalcoWrite:
    """One transaction's changes."""

    next_id: int
    aggregates: list[MessageRecord]
    digests: list[MessageRecord]
    mutes: list[MuteRecord]
    deleted_aggregates: Iterable[int] = ()
    deleted_digests: Iterable[int] = ()
    deleted_mutes: Iterable[str] = ()


class FalcoRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self) -> LoadedFalco:
        ids = await self._db.fetchone("SELECT next_id FROM falco_ids WHERE id = 1")
        digests = await self._db.fetchall(
            "SELECT id, room_id, message_outbox_id, message_event_id, state FROM falco_digests ORDER BY id"
        )
        aggregates = await self._db.fetchall(
            "SELECT id, room_id, digest_id, message_outbox_id, message_event_id, state"
            " FROM falco_aggregates ORDER BY id"
        )
        mutes = await self._db.fetchall("SELECT rule_key, ends_at, state FROM falco_mutes")
        return LoadedFalco(
            next_id=1 if ids is None else int(ids["next_id"]),
            aggregates=[
                MessageRecord(
                    int(r["id"]),
                    r["room_id"],
                    r["digest_id"],
                    r["message_outbox_id"],
                    r["message_event_id"],
                    json.loads(r["state"]),
                )
                for r in aggregates
            ],
            digests=[
                MessageRecord(
                    int(r["id"]),
                    r["room_id"],
                    None,
                    r["message_outbox_id"],
                    r["message_event_id"],
                    json.loads(r["state"]),
                )
                for r in digests
            ],
            mutes=[MuteRecord(r["rule_key"], float(r["ends_at"]), json.loads(r["state"])) for r in mutes],
        )

    async def save(self, tx: Tx, write: FalcoWrite) -> None:
        """Upsert and delete in the caller's transaction (digests first: aggregates refer to them)."""
        # Never lowers it; a WHERE rather than max(), which PostgreSQL spells GREATEST.
        await tx.execute(
            "UPDATE falco_ids SET next_id = ? WHERE id = 1 AND next_id < ?", (write.next_id, write.next_id)
        )
        if write.digests:
            await tx.executemany(
                "INSERT INTO falco_digests (id, room_id, message_outbox_id, message_event_id, state)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " message_outbox_id = excluded.message_outbox_id,"
                " message_event_id = coalesce(falco_digests.message_event_id, excluded.message_event_id),"
                " state = excluded.state",
                [
                    (d.id, d.room_id, d.message_outbox_id, d.message_event_id, _json(d.state))
                    for d in write.digests
                ],
            )
        if write.aggregates:
            await tx.executemany(
                "INSERT INTO falco_aggregates"
                " (id, room_id, digest_id, message_outbox_id, message_event_id, state)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " digest_id = excluded.digest_id,"
                " message_outbox_id = excluded.message_outbox_id,"
                " message_event_id = coalesce(falco_aggregates.message_event_id, excluded.message_event_id),"
                " state = excluded.state",
                [
                    (a.id, a.room_id, a.digest_id, a.message_outbox_id, a.message_event_id, _json(a.state))
                    for a in write.aggregates
                ],
            )
        deleted_aggregates = [(i,) for i in write.deleted_aggregates]
        if deleted_aggregates:
            await tx.executemany("DELETE FROM falco_aggregates WHERE id = ?", deleted_aggregates)
        deleted_digests = [(i,) for i in write.deleted_digests]
        if deleted_digests:
            await tx.executemany("DELETE FROM falco_digests WHERE id = ?", deleted_digests)
        if write.mutes:
            await tx.executemany(
                "INSERT INTO falco_mutes (rule_key, ends_at, state) VALUES (?, ?, ?)"
                " ON CONFLICT (rule_key) DO UPDATE SET ends_at = excluded.ends_at, state = excluded.state",
                [(m.rule_key, m.ends_at, _json(m.state)) for m in write.mutes],
            )
        deleted_mutes = [(k,) for k in write.deleted_mutes]
        if deleted_mutes:
            await tx.executemany("DELETE FROM falco_mutes WHERE rule_key = ?", deleted_mutes)

    async def backfill_event_ids(self, tx: Tx) -> dict[tuple[str, int], str]:
        """Copy event ids of sent messages from the outbox; {("aggregate"|"digest", id): event id}.

        Edits then target the event id, which survives the outbox row being pruned.
        """
        filled: dict[tuple[str, int], str] = {}
        for kind, table in (("aggregate", "falco_aggregates"), ("digest", "falco_digests")):
            # The table name is one of our two literals, never input.
            cursor = await tx.execute(
                f"UPDATE {table} SET message_event_id = ("  # noqa: S608
                " SELECT o.event_id FROM outbox o WHERE o.id = message_outbox_id)"
                " WHERE message_event_id IS NULL AND message_outbox_id IS NOT NULL AND EXISTS ("
                " SELECT 1 FROM outbox o WHERE o.id = message_outbox_id AND o.state = 'sent')"
                " RETURNING id, message_event_id"
            )
            for row in await cursor.fetchall():
                filled[(kind, int(row["id"]))] = row["message_event_id"]
            await cursor.close()
        return filled

    async def counts(self) -> dict[str, int]:
        """Rows per table (for tests and diagnostics)."""
        result = {}
        for table in ("falco_aggregates", "falco_digests", "falco_mutes"):
            row = await self._db.fetchone(f"SELECT COUNT(*) AS n FROM {table}")  # noqa: S608 (our literal)
            result[table] = 0 if row is None else int(row["n"])
        return result


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
