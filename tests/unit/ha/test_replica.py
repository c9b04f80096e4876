"""Each replica's Matrix device keeps its own credentials and sync token in the shared store."""

from __future__ import annotations

from pathlib import Path

from bot.ha.replica import ReplicaKeyValue
from bot.matrix.connection import SYNC_TOKEN_KEY
from bot.schema import MIGRATIONS
from bot.store.database import Database
from bot.store.kv import KeyValueRepo


async def test_two_replicas_keep_their_sync_tokens_apart(tmp_path: Path) -> None:
    """Each replica reads back its own token; the plain key (one replica's) stays untouched."""
    db = await Database.open(tmp_path / "shared.sqlite3", migrations=MIGRATIONS)
    try:
        zero, one, shared = (
            ReplicaKeyValue(db, "readybot-0"),
            ReplicaKeyValue(db, "readybot-1"),
            KeyValueRepo(db),
        )
        await zero.set(SYNC_TOKEN_KEY, "s0")
        await one.set(SYNC_TOKEN_KEY, "s1")
        assert (await zero.get(SYNC_TOKEN_KEY), await one.get(SYNC_TOKEN_KEY)) == ("s0", "s1")
        assert await shared.get(SYNC_TOKEN_KEY) is None
        assert await shared.get(f"{SYNC_TOKEN_KEY}@readybot-1") == "s1"
        await one.delete(SYNC_TOKEN_KEY)
        assert (await zero.get(SYNC_TOKEN_KEY), await one.get(SYNC_TOKEN_KEY)) == ("s0", None)
    finally:
        await db.close()
