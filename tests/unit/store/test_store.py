"""The store: opening, migrations, transactions and the small repositories, on SQLite and PostgreSQL.

Tests taking ``store_backend`` (or ``db``) run on both; the rest are about
the SQLite file itself (its mode, pragmas, user_version).
"""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.errors import StoreUnavailableError
from bot.schema import MIGRATIONS
from bot.store import AuditRepo, Database, HandledEvents, KeyValueRepo, SchemaTooNewError
from bot.store.migrations import migrate, schema_version
from bot.store.tx import Tx
from tests.stores import StoreBackend, other_connection_rows


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "readybot.sqlite3"


@pytest.fixture
async def db(db_path: Path, store_backend: StoreBackend) -> AsyncIterator[Database]:
    database = await store_backend.open(db_path)
    yield database
    await database.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leave_world_readable_file(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.touch(mode=0o644)
    path.chmod(0o644)


def _raw(path: Path) -> sqlite3.Connection:
    """A second, plain connection: what another process would see."""
    return sqlite3.connect(path)


async def test_open_creates_schema_and_sets_user_version(db_path: Path) -> None:
    """Opening a new file creates every table and records the schema version."""
    await (await Database.open(db_path, migrations=MIGRATIONS)).close()
    with _raw(db_path) as raw:
        tables = {name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = raw.execute("PRAGMA user_version").fetchone()[0]
    assert {"kv", "audit", "handled_events", "outbox"} <= tables
    assert version == len(MIGRATIONS)


async def _pragma(db: Database, name: str) -> object:
    row = await db.fetchone(f"PRAGMA {name}")
    assert row is not None
    return row[0]


async def test_open_sets_pragmas(db_path: Path) -> None:
    """The connection runs in WAL mode with foreign keys, NORMAL sync and a busy timeout."""
    db = await Database.open(db_path, migrations=MIGRATIONS)
    try:
        await _check_pragmas(db)
    finally:
        await db.close()


async def _check_pragmas(db: Database) -> None:
    assert await _pragma(db, "journal_mode") == "wal"
    assert await _pragma(db, "foreign_keys") == 1
    assert await _pragma(db, "synchronous") == 1  # NORMAL
    assert await _pragma(db, "busy_timeout") == 5000


async def test_file_is_private(db_path: Path) -> None:
    """The store file is readable by its owner only: it holds an access token."""
    await (await Database.open(db_path, migrations=MIGRATIONS)).close()
    assert _mode(db_path) == 0o600


async def test_existing_file_is_tightened(db_path: Path) -> None:
    """A store file left world-readable is made 0600 on open."""
    _leave_world_readable_file(db_path)
    assert _mode(db_path) == 0o644
    database = await Database.open(db_path, migrations=MIGRATIONS)
    await database.close()
    assert _mode(db_path) == 0o600


async def test_reopen_keeps_data_and_does_not_rerun_migrations(
    db_path: Path, store_backend: StoreBackend
) -> None:
    """Reopening an up-to-date store applies nothing and keeps its rows."""
    first = await store_backend.open(db_path, migrations=MIGRATIONS)
    await KeyValueRepo(first).set("sync_token", "s1")
    await first.close()

    # Migration 1 uses CREATE TABLE without IF NOT EXISTS: a rerun would raise.
    second = await store_backend.open(db_path, migrations=MIGRATIONS)
    try:
        assert await KeyValueRepo(second).get("sync_token") == "s1"
        assert await schema_version(second) == len(MIGRATIONS)
    finally:
        await second.close()


async def test_migrate_applies_only_missing_migrations(db: Database) -> None:
    """A new migration runs exactly once, and the version counts it."""
    runs: list[int] = []

    async def add_column(conn: Tx) -> None:
        runs.append(1)
        await conn.execute("ALTER TABLE kv ADD COLUMN note TEXT")

    assert await migrate(db, [*MIGRATIONS, add_column]) == len(MIGRATIONS) + 1
    assert await migrate(db, [*MIGRATIONS, add_column]) == len(MIGRATIONS) + 1
    assert runs == [1]
    assert await schema_version(db) == len(MIGRATIONS) + 1


async def test_failed_migration_rolls_back_with_its_version(db: Database) -> None:
    """A migration that fails leaves neither its changes nor a bumped version."""

    async def broken(conn: Tx) -> None:
        await conn.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await migrate(db, [*MIGRATIONS, broken])
    assert await schema_version(db) == len(MIGRATIONS)
    with pytest.raises(sqlite3.DatabaseError):  # no such table, on both backends
        await db.fetchone("SELECT x FROM half_done")


async def test_newer_schema_is_refused(db_path: Path, store_backend: StoreBackend) -> None:
    """A store written by a newer readybot is refused with a clear error."""
    database = await store_backend.open(db_path, migrations=MIGRATIONS)
    if database.dialect == "sqlite":
        await database.close()
        with _raw(db_path) as raw:
            raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    else:
        async with database.transaction() as tx:
            await tx.execute("UPDATE readybot_schema SET version = ?", (len(MIGRATIONS) + 1,))
        await database.close()

    with pytest.raises(SchemaTooNewError, match="newer than this readybot supports"):
        await store_backend.open(db_path, migrations=MIGRATIONS)


async def test_transaction_rolls_back_on_error(db: Database) -> None:
    """An exception inside transaction() undoes every write in the block."""
    kv = KeyValueRepo(db)

    async def write_then_fail() -> None:
        async with db.transaction() as tx:
            await kv.set("a", "1", tx=tx)
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        await write_then_fail()
    assert await kv.get("a") is None


async def test_repos_join_a_callers_transaction(db: Database, db_path: Path) -> None:
    """Writes made with tx= commit together, only when the caller's block ends."""
    kv, audit = KeyValueRepo(db), AuditRepo(db)
    async with db.transaction() as tx:
        await kv.set("a", "1", tx=tx)
        await audit.record("@ann:example.org", "sync", "started", tx=tx)
        # Another connection sees nothing yet.
        assert other_connection_rows(db_path, "SELECT COUNT(*) AS n FROM kv") == [{"n": 0}]
    assert await kv.get("a") == "1"
    assert len(await audit.recent()) == 1


async def test_nested_transaction_is_refused(db: Database) -> None:
    """Opening a transaction inside one (instead of passing tx) fails loudly, not by deadlock."""
    async with db.transaction():
        with pytest.raises(RuntimeError, match="nested transaction"):
            async with db.transaction():
                pass


async def test_tx_from_a_finished_transaction_is_refused(db: Database) -> None:
    """A tx kept after its block ended cannot be used to write outside a transaction."""
    async with db.transaction() as tx:
        pass
    with pytest.raises(RuntimeError, match="not an open transaction"):
        await KeyValueRepo(db).set("a", "1", tx=tx)


async def test_a_transaction_waiting_when_the_store_closes_is_store_unavailable(
    db_path: Path, store_backend: StoreBackend
) -> None:
    """A write queued on the lock as the store closes fails as StoreUnavailableError (a 503), no crash."""
    db = await store_backend.open(db_path, migrations=MIGRATIONS)
    holding = db.transaction()
    await holding.__aenter__()
    waiting = asyncio.create_task(KeyValueRepo(db).set("late", "1"))
    await asyncio.sleep(0.05)  # the write is now queued on the lock
    await holding.__aexit__(None, None, None)
    await db.close()
    with pytest.raises(StoreUnavailableError, match="closed"):
        await waiting


async def test_kv_set_get_overwrite_delete(db: Database) -> None:
    """kv stores one value per key, overwrites it, and forgets it on delete."""
    kv = KeyValueRepo(db)
    assert await kv.get("device_id") is None
    await kv.set("device_id", "DEV1")
    await kv.set("device_id", "DEV2")
    assert await kv.get("device_id") == "DEV2"
    await kv.delete("device_id")
    assert await kv.get("device_id") is None


async def test_audit_records_all_fields_newest_first(db_path: Path, store_backend: StoreBackend) -> None:
    """Audit entries keep every column, are stamped by the clock, and list newest first."""
    clock = FakeClock(100.0)
    database = await store_backend.open(db_path, migrations=MIGRATIONS, clock=clock)
    try:
        audit = AuditRepo(database)
        first = await audit.record("@ann:example.org", "help", "ok")
        clock.now = 200.0
        second = await audit.record(
            "@bob:example.org",
            "sync",
            "approved",
            room_id="!ops",
            event_id="$ev",
            args="cilium",
            detail="rev abc",
        )
        entries = await audit.recent()
        limited = await audit.recent(limit=1)
    finally:
        await database.close()

    assert [e.id for e in entries] == [second, first]
    newest = entries[0]
    assert (newest.at, newest.actor, newest.room_id, newest.event_id) == (
        200.0,
        "@bob:example.org",
        "!ops",
        "$ev",
    )
    assert (newest.action, newest.args, newest.outcome, newest.detail) == (
        "sync",
        "cilium",
        "approved",
        "rev abc",
    )
    assert entries[1].room_id is None
    assert [e.id for e in limited] == [second]


async def test_handled_claim_is_true_only_once(db: Database) -> None:
    """The first claim of an event id wins; every later claim (a replay) loses."""
    handled = HandledEvents(db)
    assert await handled.claim("$ev1") is True
    assert await handled.claim("$ev1") is False
    assert await handled.claim("$ev2") is True


async def test_handled_claim_survives_restart(db_path: Path, store_backend: StoreBackend) -> None:
    """A claim made before a restart still blocks the replayed event after it."""
    first = await store_backend.open(db_path, migrations=MIGRATIONS)
    await HandledEvents(first).claim("$ev1")
    await first.close()
    second = await store_backend.open(db_path, migrations=MIGRATIONS)
    try:
        assert await HandledEvents(second).claim("$ev1") is False
    finally:
        await second.close()


async def test_handled_prune_forgets_only_old_claims(db_path: Path, store_backend: StoreBackend) -> None:
    """prune removes claims older than the cutoff and keeps newer ones."""
    clock = FakeClock(100.0)
    database = await store_backend.open(db_path, migrations=MIGRATIONS, clock=clock)
    try:
        handled = HandledEvents(database)
        await handled.claim("$old")
        clock.now = 300.0
        await handled.claim("$new")
        assert await handled.prune(older_than=200.0) == 1
        assert await handled.claim("$old") is True
        assert await handled.claim("$new") is False
    finally:
        await database.close()


async def test_executemany_writes_every_row_and_counts_them(db: Database) -> None:
    """executemany inserts each parameter set and its rowcount is the rows written in all."""
    async with db.transaction() as tx:
        cursor = await tx.executemany(
            "INSERT INTO kv (key, value) VALUES (?, ?)", [("a", "1"), ("b", "50%"), ("c", "3")]
        )
        assert cursor.rowcount == 3
        deleted = await tx.executemany("DELETE FROM kv WHERE key = ?", [("a",), ("zz",)])
        assert deleted.rowcount == 1
    assert [tuple(row) for row in await db.fetchall("SELECT key, value FROM kv ORDER BY key")] == [
        ("b", "50%"),
        ("c", "3"),
    ]
