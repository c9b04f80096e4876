"""The Matrix session's handling of its own store: a store fault never ends the sync loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bot.matrix.connection import SYNC_TOKEN_KEY, MatrixConnection
from bot.metrics import Metrics
from bot.schema import MIGRATIONS
from bot.store import Database, KeyValueRepo
from config.settings import MatrixSettings


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "store.sqlite3", migrations=MIGRATIONS)
    yield database
    await database.close()


def connection(tmp_path: Path, db: Database) -> MatrixConnection:
    settings = MatrixSettings(
        homeserver="http://127.0.0.1:9",
        user_id="@bot:example.org",
        password="not-used",
        encryption=False,
        store_dir=tmp_path / "crypto",
    )
    return MatrixConnection(settings, KeyValueRepo(db), Metrics())


async def test_sync_token_that_cannot_be_written_is_logged_not_raised(
    tmp_path: Path, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that refuses writes (locked, full) leaves the old token and lets the sync loop go on."""
    conn = connection(tmp_path, db)
    kv = KeyValueRepo(db)
    await kv.set(SYNC_TOKEN_KEY, "s1")
    # query_only makes every write fail with sqlite3.OperationalError, as a
    # full disk or an expired busy timeout do.
    await db.conn.execute("PRAGMA query_only=ON")
    try:
        await conn._after_sync(cast(Any, SimpleNamespace(next_batch="s2")))
    finally:
        await db.conn.execute("PRAGMA query_only=OFF")
        await conn.close()
    assert await kv.get(SYNC_TOKEN_KEY) == "s1"
    assert "sync token not persisted" in caplog.text
