"""The store on both backends: SQLite files and a real PostgreSQL (a pytest plugin).

A test module runs on both with ``pytestmark = pytest.mark.usefixtures("store_backend")``
and opens its stores with ``open_store(path, …)`` instead of ``Database.open``:
on SQLite that is the file at ``path``; on PostgreSQL a fresh database of the
session's server, one per ``path`` (so reopening the same path, as after a
restart, reopens the same database). Outside such a module ``open_store`` is
``Database.open``.

``postgres`` is one server for the session (``tests.pgserver``); the fresh
databases are copies of a template the migrations ran on once, so a test pays
for ``CREATE DATABASE … TEMPLATE``, not for ten migrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from bot.schema import MIGRATIONS
from bot.store import Database
from bot.store.migrations import Migration
from bot.store.postgres import WRITE_LOCK_KEY, translate
from tests.pgserver import PostgresServer, require_pg_bin

TEMPLATE = "readybot_template"


class PostgresForTests:
    """The session's server and the migrated template its test databases are copied from."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server

    def create(self, *, migrated: bool = True) -> str:
        """A fresh database (migrated, or empty); returns its URL."""
        name = f"t_{_next_name()}"
        template = TEMPLATE if migrated else "template0"
        with psycopg.connect(self.server.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.server.url(name)

    def url(self, dbname: str) -> str:
        return self.server.url(dbname)


_counter = 0


def _next_name() -> str:
    global _counter  # noqa: PLW0603 - one counter for the session's database names
    _counter += 1
    return f"{_counter:05d}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresForTests]:
    """One PostgreSQL on 127.0.0.1 for the session (a skip without it; a failure under CI)."""
    bin_dir = require_pg_bin()
    server = PostgresServer(bin_dir, Path(tempfile.mkdtemp(prefix="readybot-pg-")))
    server.start()
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{TEMPLATE}"')

        async def migrate_template() -> None:
            db = await Database.open(Path("unused"), migrations=MIGRATIONS, url=server.url(TEMPLATE))
            await db.close()

        asyncio.run(migrate_template())
        yield PostgresForTests(server)
    finally:
        server.stop()


class StoreBackend:
    """Opens stores on one backend for one test: ``await backend.open(path, …)``."""

    def __init__(self, name: str, postgres: PostgresForTests | None) -> None:
        self.name = name
        self._postgres = postgres
        self._urls: dict[Path, str] = {}

    def url_for(self, path: Path, *, migrated: bool = True) -> str | None:
        """None on SQLite; on PostgreSQL the database standing for ``path`` (made on first use)."""
        if self._postgres is None:
            return None
        if path not in self._urls:
            self._urls[path] = self._postgres.create(migrated=migrated)
        return self._urls[path]

    async def open(
        self,
        path: Path,
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
        clock: Callable[[], float] | None = None,
    ) -> Database:
        extra: dict[str, Any] = {} if clock is None else {"clock": clock}
        migrated = list(migrations) == list(MIGRATIONS)
        return await Database.open(
            path, migrations=migrations, url=self.url_for(path, migrated=migrated), **extra
        )


_active: StoreBackend | None = None


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request: pytest.FixtureRequest) -> Iterator[StoreBackend]:
    """The backend ``open_store`` uses in this test: SQLite files, then PostgreSQL."""
    global _active  # noqa: PLW0603 - open_store is called from helpers that take only a path
    pg = request.getfixturevalue("postgres") if request.param == "postgresql" else None
    _active = StoreBackend(request.param, pg)
    try:
        yield _active
    finally:
        _active = None


async def open_store(
    path: Path,
    *,
    migrations: Sequence[Migration] = MIGRATIONS,
    clock: Callable[[], float] | None = None,
) -> Database:
    """``Database.open`` on this test's backend (SQLite when the module is not parametrised)."""
    backend = _active or StoreBackend("sqlite", None)
    return await backend.open(path, migrations=migrations, clock=clock)


def active_backend() -> str:
    """``sqlite`` or ``postgresql``: what ``open_store`` opens in this test."""
    return "sqlite" if _active is None else _active.name


def other_connection_rows(path: Path, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Rows read by a separate plain connection, as another process would see them."""
    if _active is None or _active.name == "sqlite":
        with sqlite3.connect(path) as raw:
            raw.row_factory = sqlite3.Row
            return [dict(row) for row in raw.execute(sql, tuple(params)).fetchall()]
    url = _active.url_for(path)
    assert url is not None
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as raw:
        return list(raw.execute(translate(sql), tuple(params)).fetchall())  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def write_lock_held(db: Database, path: Path) -> AsyncIterator[None]:
    """Another process holds the store's write lock, and ``db`` gives up waiting after 50 ms."""
    if db.dialect == "sqlite":
        await db.conn.execute("PRAGMA busy_timeout = 50")
        other = sqlite3.connect(path)
        try:
            other.execute("BEGIN IMMEDIATE")
            yield
        finally:
            other.rollback()
            other.close()
        return
    assert _active is not None
    url = _active.url_for(path)
    assert url is not None
    await db.conn.execute("SET lock_timeout = '50ms'")
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK_KEY,))
        try:
            yield
        finally:
            other.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK_KEY,))
