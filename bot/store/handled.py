"""Event ids the bot has acted on, so a replayed event is never handled twice."""

from __future__ import annotations

from bot.store.database import Database
from bot.store.tx import Tx


class HandledEvents:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, event_id: str, *, tx: Tx | None = None) -> bool:
        """Mark ``event_id`` handled; True only for the first claim of that id.

        The INSERT OR IGNORE is the compare-and-set: two concurrent claims (or
        a replay after a restart) cannot both win.
        """
        async with self._db.transaction(tx) as conn:
            cursor = await conn.execute(
                "INSERT OR IGNORE INTO handled_events (event_id, at) VALUES (?, ?)",
                (event_id, self._db.clock()),
            )
            return cursor.rowcount == 1

    async def prune(self, older_than: float) -> int:
        """Forget claims made before ``older_than`` (epoch seconds); return how many."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute("DELETE FROM handled_events WHERE at < ?", (older_than,))
            return cursor.rowcount
