"""Media attached to outbox rows: the bytes to upload, and where they went once uploaded.

An image message is an ordinary outbox row (``m.image`` content without its
``url``/``file``) plus one row here, committed together. The sender uploads
the bytes right before sending and records the upload's reference (``url``,
or the encrypted ``file``) first: a retry after a failed send, or after a
restart, reuses it and never uploads twice. The media row goes when its
outbox row is pruned (``ON DELETE CASCADE``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.store.tx import Tx

if TYPE_CHECKING:
    # Only for annotations: bot.store.database imports the migrations, which import this module.
    from bot.store.database import Database


async def migrate_outbox_media(conn: Tx) -> None:
    """Schema of outbox media (appended to ``bot.schema.MIGRATIONS``)."""
    await conn.execute(
        """
        CREATE TABLE outbox_media (
            outbox_id INTEGER PRIMARY KEY REFERENCES outbox (id) ON DELETE CASCADE,
            content_type TEXT NOT NULL,
            filename TEXT NOT NULL,
            data BLOB NOT NULL,
            -- JSON {"url": "mxc://…"} or {"file": {url, key, iv, hashes, v}} once
            -- uploaded; NULL before.
            uploaded TEXT
        )
        """
    )


@dataclass(frozen=True, slots=True)
class OutboxMedia:
    outbox_id: int
    content_type: str
    filename: str
    data: bytes
    uploaded: dict[str, Any] | None


class OutboxMediaRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, conn: Tx, outbox_id: int, data: bytes, content_type: str, filename: str) -> None:
        """Attach media to a row, inside the caller's open transaction ``conn``."""
        await conn.execute(
            "INSERT INTO outbox_media (outbox_id, content_type, filename, data) VALUES (?, ?, ?, ?)",
            (outbox_id, content_type, filename, data),
        )

    async def get(self, outbox_id: int) -> OutboxMedia | None:
        row = await self._db.fetchone(
            "SELECT outbox_id, content_type, filename, data, uploaded FROM outbox_media WHERE outbox_id = ?",
            (outbox_id,),
        )
        if row is None:
            return None
        return OutboxMedia(
            outbox_id=int(row["outbox_id"]),
            content_type=str(row["content_type"]),
            filename=str(row["filename"]),
            data=bytes(row["data"]),
            uploaded=json.loads(row["uploaded"]) if row["uploaded"] else None,
        )

    async def set_uploaded(self, outbox_id: int, uploaded: dict[str, Any]) -> None:
        """Remember where the bytes went, so no retry uploads them again."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE outbox_media SET uploaded = ? WHERE outbox_id = ?",
                (json.dumps(uploaded, ensure_ascii=False), outbox_id),
            )
