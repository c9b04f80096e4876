"""Small named values the bot keeps across restarts (sync token, device id, ...)."""

from __future__ import annotations

from bot.store.database import Database
from bot.store.tx import Tx


class KeyValueRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, key: str) -> str | None:
        row = await self._db.fetchone("SELECT value FROM kv WHERE key = ?", (key,))
        return None if row is None else str(row["value"])

    async def set(self, key: str, value: str, *, tx: Tx | None = None) -> None:
        async with self._db.transaction(tx) as conn:
            await conn.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    async def delete(self, key: str, *, tx: Tx | None = None) -> None:
        async with self._db.transaction(tx) as conn:
            await conn.execute("DELETE FROM kv WHERE key = ?", (key,))
