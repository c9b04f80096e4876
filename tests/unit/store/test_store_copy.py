"""readybot copy-store: a SQLite store copied into a new PostgreSQL store, ids and all."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from bot.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, main
from bot.outbox import Outbox
from bot.outbox.media import OutboxMediaRepo
from bot.outbox.repo import OutboxId, OutboxRepo
from bot.schema import MIGRATIONS
from bot.store import AuditRepo, Database, HandledEvents, KeyValueRepo
from bot.store.copy import StoreCopyError, copy_sqlite_to_postgres
from tests.stores import PostgresForTests

ROOM = "!ops:example.org"
PNG = b"\x89PNG\r\n\x1a\n\x00binary"


async def _sqlite_store(path: Path) -> int:
    """A store with rows in several tables; returns the highest outbox id it ever gave out."""
    db = await Database.open(path, migrations=MIGRATIONS, clock=lambda: 1_764_100_000.123456)
    try:
        outbox = Outbox(db)
        await KeyValueRepo(db).set("matrix.credentials", '{"device_id": "DEV1"}')
        await AuditRepo(db).record("@ann:example.org", "sync", "approved", cross_signed=True)
        await HandledEvents(db).claim("$cmd1")
        first = await outbox.send_message(ROOM, {"msgtype": "m.notice", "body": "first"})
        await outbox.react(ROOM, first, "👀")
        async with db.transaction() as tx:
            await OutboxMediaRepo(db).insert(tx, first, PNG, "image/png", "chart.png")
        last = await outbox.send_message(ROOM, {"msgtype": "m.notice", "body": "pruned"})
        async with db.transaction() as tx:
            await tx.execute("DELETE FROM outbox WHERE id = ?", (last,))
        return int(last)
    finally:
        await db.close()


async def test_copy_keeps_every_row_and_never_reuses_an_id(
    tmp_path: Path, postgres: PostgresForTests
) -> None:
    """Rows (bytes, floats, relations) arrive unchanged, and the next outbox id is past SQLite's highest."""
    path = tmp_path / "readybot.sqlite3"
    highest = await _sqlite_store(path)
    url = postgres.create(migrated=False)

    copied = await copy_sqlite_to_postgres(path, url, MIGRATIONS)
    assert copied["kv"] == 1 and copied["outbox"] == 2 and copied["outbox_media"] == 1

    db = await Database.open(Path("unused"), migrations=MIGRATIONS, url=url)
    try:
        assert await KeyValueRepo(db).get("matrix.credentials") == '{"device_id": "DEV1"}'
        [entry] = await AuditRepo(db).recent()
        assert (entry.at, entry.cross_signed) == (1_764_100_000.123456, True)
        assert await HandledEvents(db).claim("$cmd1") is False
        reaction = await OutboxRepo(db).get(OutboxId(2))
        assert reaction is not None and reaction.target.outbox_id == 1
        media = await OutboxMediaRepo(db).get(1)
        assert media is not None and media.data == PNG
        new = await Outbox(db).send_message(ROOM, {"msgtype": "m.notice", "body": "after the move"})
        assert new == highest + 1
    finally:
        await db.close()


async def test_copy_refuses_a_destination_with_rows(tmp_path: Path, postgres: PostgresForTests) -> None:
    """A second copy into the same database is refused, and names the table that has rows."""
    path = tmp_path / "readybot.sqlite3"
    await _sqlite_store(path)
    url = postgres.create(migrated=False)
    await copy_sqlite_to_postgres(path, url, MIGRATIONS)
    with pytest.raises(StoreCopyError, match="not empty"):
        await copy_sqlite_to_postgres(path, url, MIGRATIONS)


def test_copy_store_command(
    tmp_path: Path,
    postgres: PostgresForTests,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """readybot copy-store: 78 without store.url, 1 without a SQLite file, 0 and a summary once copied."""
    for name in [n for n in os.environ if n.startswith("READYBOT_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "readybot.sqlite3"
    base = (
        "matrix:\n  homeserver: https://matrix.example.org\n"
        '  user_id: "@bot:example.org"\n  password: pw\n'
        f"store:\n  path: {path}\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text(base)
    assert main(["copy-store", "-c", str(config)]) == EXIT_CONFIG
    config.write_text(base + f"  url: {postgres.create(migrated=False)}\n")
    assert main(["copy-store", "-c", str(config)]) == EXIT_FAILURE
    assert "no SQLite store at" in capsys.readouterr().err
    asyncio.run(_sqlite_store(path))
    assert main(["copy-store", "-c", str(config)]) == EXIT_OK
    # kv, audit, handled_events, two outbox rows, outbox_media, and the rows migrations seed:
    # falco_ids and leadership (the fencing token of two replicas).
    assert capsys.readouterr().out.startswith("copied 8 rows in ")
