"""Send times read back for rate budgets are exact, so no send is counted twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.outbox import Outbox, OutboxId
from bot.outbox.repo import OutboxRepo
from bot.schema import MIGRATIONS
from tests.stores import open_store

# The store on SQLite and on PostgreSQL (tests.stores).
pytestmark = pytest.mark.usefixtures("store_backend")

# An epoch time with more significant digits than SQLite's JSON keeps (15).
SENT_AT = 1_764_100_000.123456789


async def test_a_send_at_exactly_since_is_not_returned_again(tmp_path: Path) -> None:
    """send_load(since=t) never returns the send made at t, however many digits t has."""
    db = await open_store(tmp_path / "store.sqlite3", migrations=MIGRATIONS, clock=lambda: SENT_AT - 1)
    try:
        outbox = Outbox(db)
        first = await outbox.send_message("!room:example.org", {"msgtype": "m.notice", "body": "a"})
        await OutboxRepo(db).mark_sent(OutboxId(first), "$a", SENT_AT)

        load = await outbox.send_load(SENT_AT - 1, 10)
        assert load.sent_at == [SENT_AT]
        assert (await outbox.send_load(load.sent_at[-1], 10)).sent_at == []
    finally:
        await db.close()


async def test_pending_rows_are_counted(tmp_path: Path) -> None:
    """send_load counts the rows still waiting to be sent."""
    db = await open_store(tmp_path / "store.sqlite3", migrations=MIGRATIONS)
    try:
        outbox = Outbox(db)
        for body in ("a", "b"):
            await outbox.send_message("!room:example.org", {"msgtype": "m.notice", "body": body})
        assert (await outbox.send_load(0.0, 10)).pending == 2
    finally:
        await db.close()
