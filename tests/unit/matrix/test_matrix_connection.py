"""The Matrix session's handling of its own store: a store fault never ends the sync loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from nio.crypto import OlmAccount
from nio.store import DefaultStore

from bot.matrix.connection import SYNC_TOKEN_KEY, MatrixConnection, save_only_new_encrypted_rooms
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


def test_encrypted_rooms_are_written_to_the_crypto_store_only_when_new(tmp_path: Path) -> None:
    """nio's per-sync save of encrypted rooms writes only rooms not stored yet; the store holds them all."""
    store = DefaultStore("@bot:example.org", "DEVICE", str(tmp_path))
    store.save_account(OlmAccount())
    store.save_encrypted_rooms({"!a:example.org"})
    writes: list[set[str]] = []
    original = store.save_encrypted_rooms

    def counting(rooms: Any) -> None:
        writes.append(set(rooms))
        original(rooms)

    store.save_encrypted_rooms = counting
    save_only_new_encrypted_rooms(store, store.load_encrypted_rooms())
    save_only_new_encrypted_rooms(store, store.load_encrypted_rooms())  # wrapping twice is harmless

    for _ in range(3):
        store.save_encrypted_rooms({"!a:example.org"})
    store.save_encrypted_rooms({"!a:example.org", "!b:example.org"})
    store.save_encrypted_rooms({"!b:example.org"})

    assert writes == [{"!b:example.org"}]
    assert store.load_encrypted_rooms() == {"!a:example.org", "!b:example.org"}
