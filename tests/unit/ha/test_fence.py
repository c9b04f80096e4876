"""The fencing token in the store (bot.store.leadership), on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store.database import Database
from bot.store.leadership import Fence, LeadershipLost, fence_check
from tests.stores import StoreBackend


@pytest.fixture
async def db(tmp_path: Path, store_backend: StoreBackend) -> AsyncIterator[Database]:
    database = await store_backend.open(tmp_path / "state.sqlite3", clock=lambda: 1000.0)
    yield database
    await database.close()


async def test_a_new_store_has_no_term(db: Database) -> None:
    """The migration leaves one row with no holder and token 0."""
    assert await Fence(db).stored() == ("", 0)


async def test_the_leader_passes_its_check(db: Database) -> None:
    """After taking term 3 the fence check passes and the store names the holder."""
    fence = Fence(db)
    assert await fence.take("readybot-0", 3)
    await fence.check()
    assert await fence.stored() == ("readybot-0", 3)


async def test_an_old_leader_is_fenced_once_a_newer_term_is_stored(
    db: Database, store_backend: StoreBackend, tmp_path: Path
) -> None:
    """When another replica (its own connection) takes term 4, the holder of term 3 fails its check."""
    other = await store_backend.open(tmp_path / "state.sqlite3")
    old, new = Fence(db), Fence(other)
    assert await old.take("readybot-0", 3)
    assert await new.take("readybot-1", 4)
    with pytest.raises(LeadershipLost):
        await old.check()
    assert old.lost.is_set()
    await new.check()
    await other.close()


async def test_a_stale_term_cannot_be_taken(db: Database) -> None:
    """A replica whose Lease term is not above the stored one may not take the lead in the store."""
    newer, stale = Fence(db), Fence(db)
    assert await newer.take("readybot-1", 4)
    assert not await stale.take("readybot-0", 4)
    assert not await stale.take("readybot-0", 2)
    with pytest.raises(LeadershipLost):
        await stale.check()


async def test_the_check_rolls_back_the_act_it_guards(db: Database) -> None:
    """A fenced check inside a transaction aborts it: the act's own write is not committed."""
    old, new = Fence(db), Fence(db)
    await old.take("readybot-0", 1)
    await new.take("readybot-1", 2)

    async def act() -> None:
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO kv (key, value) VALUES ('acted', 'yes')")
            await fence_check(old, conn)

    with pytest.raises(LeadershipLost):
        await act()
    assert await db.fetchone("SELECT value FROM kv WHERE key = 'acted'") is None


async def test_no_fence_means_one_replica_that_always_acts(db: Database) -> None:
    """Without ha (no fence) the check is a no-op."""
    async with db.transaction() as conn:
        await fence_check(None, conn)
