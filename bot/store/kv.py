"""Small named values the bot keeps across restarts (sync token, device id, ...)."""

from __future__ import annotations

from bot.store.database import Database
from bot.store.tx import Tx


class KeyValueRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    def _key(self, key: str) -> str:
        """The row's key for ``key``; a subclass may scope it (one replica's own keys)."""
        return key

    async def get(self, key: str) -> str | None:
        row = await self._db.fetchone("SELECT value FROM kv WHERE key = ?", (self._key(key),))
        return None if row is None else str(row["value"])

    async def set(self, key: str, value: str, *, tx: Tx | None = None) -> None:
        async with self._db.transaction(tx) as conn:
            await conn.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (self._key(key), value),
            )

    async def delete(self, key: str, *, tx: Tx | None = None) -> None:
        async with self._db.transaction(tx) as conn:
            await conn.execute("DELETE FROM kv WHERE key = ?", (self._key(key),))

    async def claim(self, key: str, value: str, *, stale_if: str | None = None) -> bool:
        """Set ``key`` only if it is absent, or still holds ``stale_if``; True when this call set it.

        A compare-and-set for one process among several sharing the store
        (two replicas): exactly one of them wins a claim.
        """
        async with self._db.transaction() as conn:
            if stale_if is not None:
                cursor = await conn.execute(
                    "UPDATE kv SET value = ? WHERE key = ? AND value = ?", (value, self._key(key), stale_if)
                )
                return cursor.rowcount == 1
            cursor = await conn.execute(
                "INSERT OR IGNORE INTO kv (key, value) VALUES (?, ?)", (self._key(key), value)
            )
            return cursor.rowcount == 1
