"""The one store connection: opening, pragmas, transactions and locked reads.

The store is a SQLite file (the default) or a PostgreSQL database
(``store.url``, ``bot.store.postgres``); either way all access goes through a
single connection (for SQLite one aiosqlite worker thread).
Because the connection is shared, a statement issued by one coroutine while
another holds an open transaction would run *inside* that transaction: a write
would be committed or rolled back with someone else's work, and a read would
see rows that may still be rolled back (the outbox sender must never send a
row whose enqueue is later undone). So every write happens in
``transaction()`` and every read goes through ``fetchone``/``fetchall``; both
take the same lock.

On PostgreSQL every write transaction also takes one advisory lock, so
writers in several processes (two replicas) are serialised as SQLite's
``BEGIN IMMEDIATE`` serialises them: a transaction that reads, decides and
writes means the same on both backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import aiosqlite

from bot.errors import StoreUnavailableError
from bot.store.migrations import Migration, migrate
from bot.store.tx import Cursor, Params, Row, Tx

if TYPE_CHECKING:
    from bot.store.postgres import PgConnection

log = logging.getLogger(__name__)

__all__ = ["Database", "Params", "Row", "Tx"]

Dialect = Literal["sqlite", "postgresql"]
_T = TypeVar("_T")

_BUSY_TIMEOUT_MS = 5_000


class Database:
    """An open store: ``await Database.open(path, migrations=MIGRATIONS)``, with ``url=`` on PostgreSQL."""

    def __init__(
        self,
        conn: aiosqlite.Connection | PgConnection,
        path: Path,
        clock: Callable[[], float],
    ) -> None:
        self._conn: Tx = conn
        self._sqlite = conn if isinstance(conn, aiosqlite.Connection) else None
        self._pg = None if isinstance(conn, aiosqlite.Connection) else conn
        self.dialect: Dialect = "sqlite" if self._sqlite is not None else "postgresql"
        # The SQLite file; unused (but kept as configured) on PostgreSQL.
        self.path = path
        self.clock = clock
        self._lock = asyncio.Lock()
        # The task inside ``transaction()``, so its own reads skip the lock
        # (they would deadlock otherwise) and a nested transaction is refused.
        self._owner: asyncio.Task[Any] | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        migrations: Sequence[Migration],
        clock: Callable[[], float] = time.time,
        url: str | None = None,
    ) -> Database:
        """Open (creating if needed) the store at ``path`` and bring its schema up to date.

        With ``url`` (``postgresql://…``) the store is that PostgreSQL
        database instead and ``path`` is not touched.

        ``migrations`` is the whole ordered list (``bot.schema.MIGRATIONS``,
        assembled by the composition root), so the store knows no capability.

        Raises ``SchemaTooNewError`` if the file was written by a
        newer readybot; the connection is closed again in that case.
        ``StoreUnavailableError`` if PostgreSQL cannot be reached (the
        message shows the URL without its password).
        """
        if url is not None:
            return await cls._open_postgres(url, path, migrations, clock)
        await asyncio.to_thread(_create_private, path)
        # isolation_level=None: the sqlite3 module must not open transactions
        # behind our back; ``transaction()`` issues BEGIN IMMEDIATE itself.
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            await _configure(conn)
            db = cls(conn, path, clock)
            await migrate(db, migrations)
        except BaseException:
            await conn.close()
            raise
        return db

    @classmethod
    async def _open_postgres(
        cls, url: str, path: Path, migrations: Sequence[Migration], clock: Callable[[], float]
    ) -> Database:
        # Imported here: a bot on SQLite never loads psycopg.
        from bot.store.postgres import PgConnection

        conn = PgConnection(url)
        try:
            await conn.connect()
        except sqlite3.OperationalError as error:
            raise StoreUnavailableError(str(error)) from None
        try:
            db = cls(conn, path, clock)
            await migrate(db, migrations)
        except BaseException:
            await conn.close()
            raise
        return db

    async def close(self) -> None:
        """Close the connection; queued statements finish first.

        A transaction still waiting for the lock then fails with
        ``StoreUnavailableError`` (a webhook answers 503 and its sender
        retries against the next process) instead of meeting a closed
        connection (a 500 with a traceback).
        """
        self._closed = True
        if self._sqlite is not None:
            await self._sqlite.close()
        elif self._pg is not None:
            await self._pg.close()

    @property
    def conn(self) -> Tx:
        """The raw connection. Prefer ``transaction()`` and ``fetch*``, which take the lock."""
        return self._conn

    @contextlib.asynccontextmanager
    async def transaction(self, join: Tx | None = None) -> AsyncIterator[Tx]:
        """Run the block in one write transaction and yield the connection to use.

        With ``join`` (a connection yielded by an enclosing ``transaction()``)
        the block joins that transaction instead: this is how a repository
        method taking ``tx=`` lets its caller commit several repositories'
        rows atomically.
        """
        if join is not None:
            if join is not self._conn or not join.in_transaction:
                raise RuntimeError("tx is not an open transaction of this database")
            yield join
            return
        task = asyncio.current_task()
        if task is not None and task is self._owner:
            raise RuntimeError("nested transaction: pass the enclosing tx instead")
        async with self._lock:
            if self._closed:
                raise StoreUnavailableError("the store is closed (shutting down)")
            self._owner = task
            try:
                if self._pg is not None:
                    await self._pg.ensure()
                    # The advisory write lock, taken with BEGIN: see the module's docstring.
                    await self._pg.begin()
                    yield self._conn
                    await self._pg.commit()
                else:
                    assert self._sqlite is not None
                    # IMMEDIATE takes the write lock up front, so a busy file
                    # fails here (after busy_timeout), not half-way through.
                    await self._sqlite.execute("BEGIN IMMEDIATE")
                    yield self._conn
                    await self._sqlite.commit()
            except BaseException:
                # A no-op when BEGIN never ran or COMMIT already succeeded
                # (the sqlite3 module checks for an open transaction; the
                # PostgreSQL connection for its transaction status).
                if self._pg is not None:
                    await self._pg.rollback()
                elif self._sqlite is not None:
                    await self._sqlite.rollback()
                raise
            finally:
                self._owner = None

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Run a read and return every row, never seeing another task's uncommitted writes."""
        async with self._reading():
            return await self._read(sql, params, _all_rows)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """Run a read and return its first row (or None)."""
        async with self._reading():
            return await self._read(sql, params, _first_row)

    async def _read(self, sql: str, params: Params, fetch: Callable[[Cursor], Awaitable[_T]]) -> _T:
        params = tuple(params)
        for attempt in (1, 2):
            try:
                cursor = await self._conn.execute(sql, params)
                try:
                    return await fetch(cursor)
                finally:
                    await cursor.close()
            except sqlite3.OperationalError:
                # A read outside a transaction is safe to repeat once on a new
                # connection when PostgreSQL dropped the old one (a failover).
                if self._pg is None or attempt == 2 or not self._pg.lost or self._owner is not None:
                    raise
                await self._pg.ensure()
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and task is self._owner:
            # Reading inside our own transaction: we already hold the lock.
            yield
            return
        async with self._lock:
            if self._pg is not None and not self._closed:
                await self._pg.ensure()
            yield


async def _all_rows(cursor: Cursor) -> list[Row]:
    return list(await cursor.fetchall())


async def _first_row(cursor: Cursor) -> Row | None:
    return await cursor.fetchone()


def _create_private(path: Path) -> None:
    """Create the directory, and the file as 0600 before SQLite opens it: it holds an access token.

    Creating it ourselves avoids a window in which the file exists with the
    umask's mode; chmod also tightens a file left by an older version. SQLite
    gives its -wal and -shm files the main file's mode.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


async def _configure(conn: aiosqlite.Connection) -> None:
    # WAL: readers never block the writer; NORMAL is durable across process
    # crashes in WAL mode (only an OS crash can lose the last commits).
    row = await _pragma(conn, "journal_mode=WAL")
    if row is None or str(row[0]).lower() != "wal":
        log.warning("SQLite refused WAL journal mode (got %s); continuing", None if row is None else row[0])
    await _pragma(conn, "synchronous=NORMAL")
    await _pragma(conn, f"busy_timeout={_BUSY_TIMEOUT_MS}")
    await _pragma(conn, "foreign_keys=ON")


async def _pragma(conn: aiosqlite.Connection, pragma: str) -> sqlite3.Row | None:
    cursor = await conn.execute(f"PRAGMA {pragma}")
    try:
        return await cursor.fetchone()
    finally:
        await cursor.close()
