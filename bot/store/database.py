"""The one SQLite connection: opening, pragmas, transactions and locked reads.

All access goes through a single aiosqlite connection (one worker thread).
Because the connection is shared, a statement issued by one coroutine while
another holds an open transaction would run *inside* that transaction: a write
would be committed or rolled back with someone else's work, and a read would
see rows that may still be rolled back (the outbox sender must never send a
row whose enqueue is later undone). So every write happens in
``transaction()`` and every read goes through ``fetchone``/``fetchall``; both
take the same lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from bot.errors import StoreUnavailableError
from bot.store.migrations import Migration, migrate

log = logging.getLogger(__name__)

# SQLite parameters: positional values for the ``?`` placeholders.
Params = Iterable[Any]

_BUSY_TIMEOUT_MS = 5_000


class Database:
    """An open store file. Create with ``await Database.open(path, migrations=MIGRATIONS)``."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, clock: Callable[[], float]) -> None:
        self._conn = conn
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
    ) -> Database:
        """Open (creating if needed) the store at ``path`` and bring its schema up to date.

        ``migrations`` is the whole ordered list (``bot.schema.MIGRATIONS``,
        assembled by the composition root), so the store knows no capability.

        Raises ``SchemaTooNewError`` if the file was written by a
        newer readybot; the connection is closed again in that case.
        """
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

    async def close(self) -> None:
        """Close the connection; queued statements finish first.

        A transaction still waiting for the lock then fails with
        ``StoreUnavailableError`` (a webhook answers 503 and its sender
        retries against the next process) instead of meeting a closed
        connection (a 500 with a traceback).
        """
        self._closed = True
        await self._conn.close()

    @property
    def conn(self) -> aiosqlite.Connection:
        """The raw connection. Prefer ``transaction()`` and ``fetch*``, which take the lock."""
        return self._conn

    @contextlib.asynccontextmanager
    async def transaction(
        self, join: aiosqlite.Connection | None = None
    ) -> AsyncIterator[aiosqlite.Connection]:
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
                # IMMEDIATE takes the write lock up front, so a busy file
                # fails here (after busy_timeout), not half-way through.
                await self._conn.execute("BEGIN IMMEDIATE")
                yield self._conn
                await self._conn.commit()
            except BaseException:
                # A no-op when BEGIN never ran or COMMIT already succeeded
                # (the sqlite3 module checks for an open transaction).
                await self._conn.rollback()
                raise
            finally:
                self._owner = None

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Run a read and return every row, never seeing another task's uncommitted writes."""
        async with self._reading():
            cursor = await self._conn.execute(sql, params)
            try:
                return list(await cursor.fetchall())
            finally:
                await cursor.close()

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """Run a read and return its first row (or None)."""
        async with self._reading():
            cursor = await self._conn.execute(sql, params)
            try:
                return await cursor.fetchone()
            finally:
                await cursor.close()

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and task is self._owner:
            # Reading inside our own transaction: we already hold the lock.
            yield
            return
        async with self._lock:
            yield


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
