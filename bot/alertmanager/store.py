"""Alert groups, where each one was posted, and digest messages: the relay's memory across restarts.

Tables (``migrate_alert_groups``):

- ``alert_groups``: one row per Alertmanager group key, its current episode.
  The columns others query are columns; the rest (alerts, annotations) is the
  relay's JSON in ``state``.
- ``alert_group_posts``: per group and room, either the group's own message
  (an outbox row, and its event id once sent) or the digest it is a line of.
- ``alert_digests``: one digest message per row.

A message reference is kept as the outbox row id until the event id is known
(``backfill_event_ids`` copies it over), because outbox rows may be pruned.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.store.tx import Row, Tx

if TYPE_CHECKING:
    from bot.store.database import Database

__all__ = [
    "AlertGroupRecord",
    "AlertGroupRepo",
    "DigestRow",
    "GroupRow",
    "PostRow",
    "migrate_alert_groups",
]


async def migrate_alert_groups(conn: Tx) -> None:
    """Create the relay's tables (a migration: runs once, inside the migration's transaction)."""
    # Shipped: the SQL below is never edited, so every store holds the same
    # schema text. (Its comment's bot.relays.alertmanager is bot.alertmanager.groups now.)
    await conn.execute(
        """
        CREATE TABLE alert_groups (
            group_key TEXT PRIMARY KEY,
            receiver TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
            group_labels TEXT NOT NULL,
            common_labels TEXT NOT NULL,
            external_url TEXT NOT NULL,
            -- JSON owned by bot.relays.alertmanager: alerts, annotations.
            state TEXT NOT NULL,
            first_seen REAL NOT NULL,
            updated_at REAL NOT NULL,
            resolved_at REAL
        )
        """
    )
    await conn.execute("CREATE INDEX alert_groups_resolved ON alert_groups (resolved_at)")
    await conn.execute(
        """
        CREATE TABLE alert_digests (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            room_id TEXT NOT NULL,
            -- No foreign key to outbox: a pruned outbox row must not take
            -- this with it; the event id is copied here once known.
            message_outbox_id INTEGER,
            message_event_id TEXT,
            created_at REAL NOT NULL,
            CHECK (message_outbox_id IS NOT NULL OR message_event_id IS NOT NULL)
        )
        """
    )
    await conn.execute(
        """
        CREATE TABLE alert_group_posts (
            group_key TEXT NOT NULL REFERENCES alert_groups (group_key) ON DELETE CASCADE,
            room_id TEXT NOT NULL,
            message_outbox_id INTEGER,
            message_event_id TEXT,
            digest_id INTEGER REFERENCES alert_digests (id),
            posted_at REAL NOT NULL,
            PRIMARY KEY (group_key, room_id),
            -- Its own message or a digest line, never both, never neither.
            CHECK ((message_outbox_id IS NULL AND message_event_id IS NULL) != (digest_id IS NULL))
        )
        """
    )
    await conn.execute(
        "CREATE INDEX alert_group_posts_event ON alert_group_posts (room_id, message_event_id)"
    )
    await conn.execute("CREATE INDEX alert_group_posts_digest ON alert_group_posts (digest_id)")
    # The relay reads recent send times to estimate the homeserver's rate
    # budget; without this index that read would scan every sent row.
    await conn.execute("CREATE INDEX outbox_sent_at ON outbox (settled_at) WHERE state = 'sent'")


@dataclass(frozen=True, slots=True)
class GroupRow:
    group_key: str
    receiver: str
    status: str
    group_labels: dict[str, str]
    common_labels: dict[str, str]
    external_url: str
    state: dict[str, Any]
    first_seen: float
    updated_at: float
    resolved_at: float | None


@dataclass(frozen=True, slots=True)
class PostRow:
    group_key: str
    room_id: str
    message_outbox_id: int | None
    message_event_id: str | None
    digest_id: int | None
    posted_at: float


@dataclass(frozen=True, slots=True)
class DigestRow:
    id: int
    room_id: str
    message_outbox_id: int | None
    message_event_id: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class AlertGroupRecord:
    """A group as seen from one of its messages (for reactions such as 🔕 on it)."""

    group_key: str
    receiver: str
    status: str
    group_labels: dict[str, str]
    common_labels: dict[str, str]
    external_url: str
    room_id: str
    # The group's message: the root of its thread.
    event_id: str

    @property
    def thread_root(self) -> str:
        return self.event_id


@dataclass(frozen=True, slots=True)
class LoadedAlertState:
    groups: list[GroupRow]
    posts: list[PostRow]
    digests: list[DigestRow]


@dataclass(frozen=True, slots=True)
class Backfilled:
    """Event ids learnt for message references that were outbox rows."""

    posts: dict[tuple[str, str], str]  # (group key, room id) -> event id
    digests: dict[int, str]  # digest id -> event id
    # Own messages whose outbox row failed for good: the group is not visible there.
    failed_posts: list[tuple[str, str]]


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _group(row: Row) -> GroupRow:
    return GroupRow(
        group_key=row["group_key"],
        receiver=row["receiver"],
        status=row["status"],
        group_labels=json.loads(row["group_labels"]),
        common_labels=json.loads(row["common_labels"]),
        external_url=row["external_url"],
        state=json.loads(row["state"]),
        first_seen=row["first_seen"],
        updated_at=row["updated_at"],
        resolved_at=row["resolved_at"],
    )


class AlertGroupRepo:
    """The relay's tables.

    Writes take the caller's transaction (``tx``), so group state and the
    outbox rows that show it commit together.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self) -> LoadedAlertState:
        """Everything, for the relay's in-memory view at start-up."""
        groups = [_group(row) for row in await self._db.fetchall("SELECT * FROM alert_groups")]
        posts = [
            PostRow(
                row["group_key"],
                row["room_id"],
                row["message_outbox_id"],
                row["message_event_id"],
                row["digest_id"],
                row["posted_at"],
            )
            for row in await self._db.fetchall("SELECT * FROM alert_group_posts ORDER BY posted_at")
        ]
        digests = [
            DigestRow(
                row["id"],
                row["room_id"],
                row["message_outbox_id"],
                row["message_event_id"],
                row["created_at"],
            )
            for row in await self._db.fetchall("SELECT * FROM alert_digests ORDER BY id")
        ]
        return LoadedAlertState(groups, posts, digests)

    async def save(
        self,
        tx: Tx,
        groups: Iterable[GroupRow],
        posts: Iterable[PostRow],
        *,
        new_episodes: Iterable[str] = (),
    ) -> None:
        """Upsert groups and their posts; a new episode's old posts are dropped first."""
        fresh = list(new_episodes)
        if fresh:
            await tx.executemany("DELETE FROM alert_group_posts WHERE group_key = ?", [(k,) for k in fresh])
        await tx.executemany(
            "INSERT INTO alert_groups (group_key, receiver, status, group_labels, common_labels,"
            " external_url, state, first_seen, updated_at, resolved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (group_key) DO UPDATE SET receiver = excluded.receiver, status = excluded.status,"
            " group_labels = excluded.group_labels, common_labels = excluded.common_labels,"
            " external_url = excluded.external_url, state = excluded.state, first_seen = excluded.first_seen,"
            " updated_at = excluded.updated_at, resolved_at = excluded.resolved_at",
            [
                (
                    g.group_key,
                    g.receiver,
                    g.status,
                    _json(g.group_labels),
                    _json(g.common_labels),
                    g.external_url,
                    _json(g.state),
                    g.first_seen,
                    g.updated_at,
                    g.resolved_at,
                )
                for g in groups
            ],
        )
        await tx.executemany(
            "INSERT INTO alert_group_posts (group_key, room_id, message_outbox_id, message_event_id,"
            " digest_id, posted_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (group_key, room_id) DO UPDATE SET message_outbox_id = excluded.message_outbox_id,"
            " message_event_id = excluded.message_event_id, digest_id = excluded.digest_id,"
            " posted_at = excluded.posted_at",
            [
                (p.group_key, p.room_id, p.message_outbox_id, p.message_event_id, p.digest_id, p.posted_at)
                for p in posts
            ],
        )

    async def insert_digest(self, tx: Tx, room_id: str, message_outbox_id: int, created_at: float) -> int:
        cursor = await tx.execute(
            "INSERT INTO alert_digests (room_id, message_outbox_id, created_at) VALUES (?, ?, ?)"
            " RETURNING id",
            (room_id, message_outbox_id, created_at),
        )
        row = await cursor.fetchone()
        assert row is not None  # an INSERT … RETURNING always returns its row
        return int(row["id"])

    async def find_by_message(self, room_id: str, event_id: str) -> AlertGroupRecord | None:
        """The group whose own message in ``room_id`` is ``event_id``; None for any other event."""
        row = await self._db.fetchone(
            "SELECT g.*, p.room_id AS post_room FROM alert_group_posts p"
            " JOIN alert_groups g ON g.group_key = p.group_key"
            " WHERE p.room_id = ? AND p.message_event_id = ?",
            (room_id, event_id),
        )
        if row is None:
            # Sent, but the event id not copied over yet: look through the outbox.
            row = await self._db.fetchone(
                "SELECT g.*, p.room_id AS post_room FROM alert_group_posts p"
                " JOIN alert_groups g ON g.group_key = p.group_key"
                " JOIN outbox o ON o.id = p.message_outbox_id"
                " WHERE p.room_id = ? AND p.message_event_id IS NULL AND o.event_id = ?",
                (room_id, event_id),
            )
        if row is None:
            return None
        group = _group(row)
        return AlertGroupRecord(
            group_key=group.group_key,
            receiver=group.receiver,
            status=group.status,
            group_labels=group.group_labels,
            common_labels=group.common_labels,
            external_url=group.external_url,
            room_id=row["post_room"],
            event_id=event_id,
        )

    async def backfill_event_ids(self) -> Backfilled:
        """Copy event ids of sent messages from the outbox, before its rows can be pruned."""
        async with self._db.transaction() as tx:
            cursor = await tx.execute(
                "UPDATE alert_group_posts SET message_event_id = ("
                " SELECT o.event_id FROM outbox o WHERE o.id = message_outbox_id AND o.state = 'sent')"
                " WHERE message_event_id IS NULL AND message_outbox_id IS NOT NULL AND EXISTS ("
                " SELECT 1 FROM outbox o WHERE o.id = message_outbox_id AND o.state = 'sent')"
                " RETURNING group_key, room_id, message_event_id"
            )
            posts = {(r["group_key"], r["room_id"]): r["message_event_id"] for r in await cursor.fetchall()}
            await cursor.close()
            cursor = await tx.execute(
                "UPDATE alert_digests SET message_event_id = ("
                " SELECT o.event_id FROM outbox o WHERE o.id = message_outbox_id AND o.state = 'sent')"
                " WHERE message_event_id IS NULL AND EXISTS ("
                " SELECT 1 FROM outbox o WHERE o.id = message_outbox_id AND o.state = 'sent')"
                " RETURNING id, message_event_id"
            )
            digests = {int(r["id"]): r["message_event_id"] for r in await cursor.fetchall()}
            await cursor.close()
            cursor = await tx.execute(
                "SELECT p.group_key, p.room_id FROM alert_group_posts p JOIN outbox o"
                " ON o.id = p.message_outbox_id WHERE p.message_event_id IS NULL AND o.state = 'failed'"
            )
            failed = [(r["group_key"], r["room_id"]) for r in await cursor.fetchall()]
            await cursor.close()
        return Backfilled(posts, digests, failed)

    async def delete_post(self, group_key: str, room_id: str) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "DELETE FROM alert_group_posts WHERE group_key = ? AND room_id = ?", (group_key, room_id)
            )

    async def prune_resolved(self, resolved_before: float) -> list[str]:
        """Forget groups resolved before the given time, and digests no group is in; their keys."""
        async with self._db.transaction() as tx:
            cursor = await tx.execute(
                "DELETE FROM alert_groups WHERE status = 'resolved' AND resolved_at < ? RETURNING group_key",
                (resolved_before,),
            )
            keys = [r["group_key"] for r in await cursor.fetchall()]
            await cursor.close()
            if keys:
                await tx.execute(
                    "DELETE FROM alert_digests WHERE id NOT IN"
                    " (SELECT digest_id FROM alert_group_posts WHERE digest_id IS NOT NULL)"
                )
        return keys
