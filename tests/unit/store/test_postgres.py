"""The store on a real PostgreSQL: types, two replicas on one database, lost connections.

The behaviours both backends share are in ``test_store.py`` (run on both);
these are what only a shared server has: two processes (two ``Database``
objects, each with its own connection) racing for the same rows and
migrations, and a connection the server drops.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
import pytest

from bot.errors import StoreUnavailableError
from bot.outbox.repo import NewOutboxRow, OutboxId, OutboxKind, OutboxRepo
from bot.schema import MIGRATIONS
from bot.store import Database, HandledEvents, KeyValueRepo
from bot.store.migrations import Migration, schema_version
from bot.store.tx import Tx
from tests.stores import PostgresForTests

UNUSED = Path("unused.sqlite3")


async def _open(url: str, migrations: list[Migration] | None = None) -> Database:
    return await Database.open(UNUSED, migrations=list(migrations or MIGRATIONS), url=url)


async def _pending_row(db: Database, n: int) -> OutboxId:
    async with db.transaction() as tx:
        return await OutboxRepo(db).insert(
            tx,
            NewOutboxRow(
                room_id="!r:example.org",
                kind=OutboxKind.MESSAGE,
                payload={"body": f"m{n}"},
                txn_id=f"txn-{n}",
                created_at=1_764_000_000.0 + n,
            ),
        )


async def test_no_column_is_float4_or_int4(postgres: PostgresForTests) -> None:
    """Every migrated column is wide: no float4 or int4 that would truncate an epoch time or an id."""
    with psycopg.connect(postgres.create(), autocommit=True) as conn:
        narrow = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public' AND data_type IN ('real', 'integer', 'smallint')"
        ).fetchall()
    assert narrow == []


async def test_epoch_times_keep_their_microseconds(postgres: PostgresForTests) -> None:
    """A REAL column stores an epoch time with the same precision as SQLite (a double)."""
    db = await _open(postgres.create())
    try:
        at = 1_764_100_000.123456
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO handled_events (event_id, at) VALUES (?, ?)", ("$e", at))
        row = await db.fetchone("SELECT at FROM handled_events")
        assert row is not None and row["at"] == at
    finally:
        await db.close()


async def test_two_replicas_cannot_both_settle_the_same_outbox_row(postgres: PostgresForTests) -> None:
    """Two Database objects racing mark_sent on the same pending rows: exactly one wins each row."""
    url = postgres.create()
    first, second = await _open(url), await _open(url)
    try:
        rows = [await _pending_row(first, n) for n in range(20)]
        for row in rows:
            won = await asyncio.gather(
                OutboxRepo(first).mark_sent(row, "$a", 1.0),
                OutboxRepo(second).mark_sent(row, "$b", 1.0),
            )
            assert sorted(won) == [False, True]
    finally:
        await first.close()
        await second.close()


async def test_two_replicas_cannot_both_claim_a_row_read_then_written(postgres: PostgresForTests) -> None:
    """A claim that reads the row then writes it runs serially across replicas: one claim per row.

    Under READ COMMITTED both transactions would read 'pending' without the
    write lock every transaction takes; this is the shape of a claim that
    checks something (a fencing token) before it writes.
    """
    url = postgres.create()
    first, second = await _open(url), await _open(url)
    claims: list[str] = []

    async def claim(db: Database, row: OutboxId, who: str) -> None:
        async with db.transaction() as tx:
            cursor = await tx.execute("SELECT state FROM outbox WHERE id = ?", (row,))
            found = await cursor.fetchone()
            assert found is not None
            if found["state"] != "pending":
                return
            await asyncio.sleep(0.02)  # the other replica reads now, if it can
            await tx.execute(
                "UPDATE outbox SET state = 'sent', event_id = ?, settled_at = 1 WHERE id = ?",
                (f"${who}", row),
            )
            claims.append(who)

    try:
        rows = [await _pending_row(first, n) for n in range(5)]
        for row in rows:
            await asyncio.gather(claim(first, row, "a"), claim(second, row, "b"))
        assert len(claims) == len(rows)
    finally:
        await first.close()
        await second.close()


async def test_two_replicas_claim_an_event_once(postgres: PostgresForTests) -> None:
    """handled_events on a shared database: one replica's claim of an event id wins, the other's loses."""
    url = postgres.create()
    first, second = await _open(url), await _open(url)
    try:
        for n in range(20):
            won = await asyncio.gather(
                HandledEvents(first).claim(f"$e{n}"), HandledEvents(second).claim(f"$e{n}")
            )
            assert sorted(won) == [False, True]
    finally:
        await first.close()
        await second.close()


async def test_replicas_starting_together_migrate_once(postgres: PostgresForTests) -> None:
    """Two processes opening an empty database at once run each migration once, and both open."""
    runs: Counter[int] = Counter()

    def counted(number: int, migration: Migration) -> Callable[[Tx], Awaitable[None]]:
        async def run(conn: Tx) -> None:
            runs[number] += 1
            await asyncio.sleep(0.005)  # let the other replica try meanwhile
            await migration(conn)

        return run

    migrations = [counted(n, m) for n, m in enumerate(MIGRATIONS, start=1)]
    url = postgres.create(migrated=False)
    first, second = await asyncio.gather(_open(url, migrations), _open(url, migrations))
    try:
        assert runs == Counter(dict.fromkeys(range(1, len(MIGRATIONS) + 1), 1))
        assert await schema_version(first) == await schema_version(second) == len(MIGRATIONS)
    finally:
        await first.close()
        await second.close()


async def test_a_dropped_connection_is_replaced(postgres: PostgresForTests) -> None:
    """After the server drops the session (a failover), the next read and write reconnect and succeed."""
    url = postgres.create()
    db = await _open(url)
    kv = KeyValueRepo(db)
    try:
        await kv.set("k", "1")
        for write_first in (True, False):
            row = await db.fetchone("SELECT pg_backend_pid() AS pid")
            assert row is not None
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (row["pid"],))
            if write_first:
                await kv.set("k", "2")
                assert await kv.get("k") == "2"
            else:
                assert await kv.get("k") == "2"
    finally:
        await db.close()


async def test_a_held_write_lock_times_out_as_database_is_locked(postgres: PostgresForTests) -> None:
    """Another process holding the write lock fails a write as SQLite would: OperationalError, 'locked'."""
    url = postgres.create()
    db = await _open(url)
    try:
        await db.conn.execute("SET lock_timeout = '50ms'")
        with psycopg.connect(url, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(x'7265616479626F74'::bigint)")
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                await KeyValueRepo(db).set("k", "v")
        await KeyValueRepo(db).set("k", "v")  # and works again once it is released
    finally:
        await db.close()


async def test_unreachable_postgres_is_store_unavailable_without_the_password(
    postgres: PostgresForTests,
) -> None:
    """A URL nobody answers fails the open as StoreUnavailableError naming the URL, password masked."""
    port = postgres.server.port
    url = f"postgresql://readybot:hunter2secret@127.0.0.1:{port}/no_such_database"
    with pytest.raises(StoreUnavailableError) as caught:
        await _open(url)
    message = str(caught.value)
    assert "hunter2secret" not in message
    assert f"postgresql://readybot:***@127.0.0.1:{port}/no_such_database" in message


async def test_values_come_back_as_sqlite_returns_them(postgres: PostgresForTests) -> None:
    """A bool is stored as 1, SUM of integers is an int and a decimal literal a float, never Decimal."""
    db = await _open(postgres.create())
    try:
        async with db.transaction() as tx:
            await tx.execute(
                "INSERT INTO audit (at, actor, action, outcome, cross_signed) VALUES (?, ?, ?, ?, ?)",
                (1.5, "@a:example.org", "ping", "ok", True),
            )
        row = await db.fetchone(
            "SELECT cross_signed, SUM(cross_signed) AS total, ? AS literal, '50%' AS pct FROM audit"
            " GROUP BY cross_signed",
            (2.25,),
        )
        assert row is not None
        values = (row["cross_signed"], row["total"], row["literal"], row["pct"])
        assert values == (1, 1, 2.25, "50%")
        assert [type(value) for value in values] == [int, int, float, str]
    finally:
        await db.close()
