"""Copy a SQLite store into a new PostgreSQL store (``readybot copy-store``), run with the bot stopped.

Moving to PostgreSQL without this would start from an empty store: a new
Matrix device (the device id, access token and cross-signing keys are in
``kv``), an empty outbox and audit log. Both stores are first brought to the
same schema version by the ordinary migrations, so their columns match; then
every table is copied row by row (parents before the tables whose foreign
keys name them, each in rowid order so a row's earlier targets exist first),
all in one PostgreSQL transaction, and each identity sequence is set past the
highest id SQLite ever gave out (``sqlite_sequence``), so an outbox id is
never reused. A destination with any row in it is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from bot.store.database import Database
from bot.store.migrations import Migration

_USED_MARKERS = ("kv", "audit", "outbox")


class StoreCopyError(RuntimeError):
    """The copy cannot be made (no source file, a destination that is not empty); the message says why."""


async def copy_sqlite_to_postgres(path: Path, url: str, migrations: Sequence[Migration]) -> dict[str, int]:
    """Copy the SQLite store at ``path`` into the empty PostgreSQL store at ``url``; rows per table."""
    if not await asyncio.to_thread(path.is_file):
        raise StoreCopyError(f"no SQLite store at {path} (store.path)")
    source = await Database.open(path, migrations=migrations)
    try:
        destination = await Database.open(path, migrations=migrations, url=url)
        try:
            return await _copy(source, destination)
        finally:
            await destination.close()
    finally:
        await source.close()


async def _tables_in_order(source: Database) -> list[str]:
    names = [
        str(row["name"])
        for row in await source.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    parents: dict[str, set[str]] = {}
    for name in names:
        # PRAGMA takes no bound parameters; the name comes from sqlite_master.
        rows = await source.fetchall(f'PRAGMA foreign_key_list("{name}")')
        parents[name] = {str(row["table"]) for row in rows} - {name}
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [name for name in names if name not in ordered and parents[name] <= set(ordered)]
        if not ready:
            raise StoreCopyError("the store's foreign keys form a cycle; cannot order the copy")
        ordered.extend(ready)
    return ordered


async def _copy(source: Database, destination: Database) -> dict[str, int]:
    tables = await _tables_in_order(source)
    # A bot that ever ran on the destination wrote these; other tables may
    # hold rows the migrations seed (falco_ids), replaced below.
    for name in _USED_MARKERS:
        if await destination.fetchone(f"SELECT 1 FROM {name} LIMIT 1") is not None:  # noqa: S608 (constants)
            raise StoreCopyError(
                f"the PostgreSQL store is not empty (table {name} has rows): copy only into a new database"
            )
    sequences = (
        {
            str(row["name"]): int(row["seq"])
            for row in await source.fetchall("SELECT name, seq FROM sqlite_sequence")
        }
        if await source.fetchone("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'")
        else {}
    )
    copied: dict[str, int] = {}
    async with destination.transaction() as tx:
        for name in reversed(tables):
            await tx.execute(f'DELETE FROM "{name}"')  # noqa: S608 (names from sqlite_master)
        for name in tables:
            rows = await source.fetchall(f'SELECT * FROM "{name}" ORDER BY rowid')  # noqa: S608
            copied[name] = len(rows)
            if rows:
                columns = rows[0].keys()
                marks = ", ".join("?" for _ in columns)
                quoted = ", ".join(f'"{column}"' for column in columns)
                await tx.executemany(
                    f'INSERT INTO "{name}" ({quoted}) VALUES ({marks})',  # noqa: S608
                    [tuple(row) for row in rows],
                )
            cursor = await tx.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = ? AND is_identity = 'YES'",
                (name,),
            )
            for identity in await cursor.fetchall():
                column = str(identity["column_name"])
                cursor = await tx.execute(f'SELECT MAX("{column}") AS top FROM "{name}"')  # noqa: S608
                top = await cursor.fetchone()
                highest = max(int(top["top"] or 0) if top else 0, sequences.get(name, 0))
                if highest > 0:
                    await tx.execute(
                        "SELECT setval(pg_get_serial_sequence(?, ?), ?)", (name, column, highest)
                    )
    return copied
