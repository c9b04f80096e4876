"""A standby replica's router acts on nothing, then hands on what it held when it takes the lead."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nio import MatrixRoom, ReactionEvent, RoomMessageText

from bot.dispatcher import Dispatcher
from bot.extensions import Extensions
from bot.matrix.connection import MatrixConnection
from bot.matrix.router import Router
from bot.metrics import Metrics
from bot.outbox import Outbox
from bot.permissions import Authorizer
from bot.render.templates import Templates
from bot.schema import MIGRATIONS
from bot.services import Services
from bot.store.audit import AuditRepo
from bot.store.database import Database
from bot.store.handled import HandledEvents
from bot.store.kv import KeyValueRepo
from commands import load_all
from commands.registry import registry
from config.settings import MatrixSettings, Settings

BOT, ALICE, ROOM = "@bot:example.org", "@alice:example.org", "!room:example.org"
LED_AT = 1_800_000_000.0


def text(event_id: str, body: str, at: float) -> RoomMessageText:
    event = RoomMessageText.from_dict(
        {
            "event_id": event_id,
            "sender": ALICE,
            "origin_server_ts": int(at * 1000),
            "type": "m.room.message",
            "content": {"msgtype": "m.text", "body": body},
        }
    )
    assert isinstance(event, RoomMessageText)
    return event


def reaction(event_id: str, target: str, at: float) -> ReactionEvent:
    event = ReactionEvent.from_dict(
        {
            "event_id": event_id,
            "sender": ALICE,
            "origin_server_ts": int(at * 1000),
            "type": "m.reaction",
            "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "✅"}},
        }
    )
    assert isinstance(event, ReactionEvent)
    return event


class Harness:
    def __init__(self, db: Database, router: Router, handled: HandledEvents) -> None:
        self.db, self.router, self.handled = db, router, handled
        self.reactions: list[str] = []

    async def on_reaction(
        self, room_id: str, sender: str, target_event_id: str, key: str, event_id: str, *, sent_at: float
    ) -> None:
        self.reactions.append(event_id)

    async def audit(self) -> list[tuple[str, str, str]]:
        rows = await self.db.fetchall("SELECT event_id, action, outcome FROM audit ORDER BY id")
        return [(str(r["event_id"]), str(r["action"]), str(r["outcome"])) for r in rows]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    clock = lambda: LED_AT + 5  # noqa: E731 - the injected "now", after the takeover
    matrix = MatrixSettings(
        homeserver="https://matrix.example.org",
        user_id=BOT,
        password="p",
        encryption=False,
        store_dir=tmp_path / "crypto",
        rooms=[ROOM],
    )
    db = await Database.open(tmp_path / "store.sqlite3", migrations=MIGRATIONS, clock=clock)
    audit, handled = AuditRepo(db), HandledEvents(db)
    connection = MatrixConnection(matrix, KeyValueRepo(db), Metrics())
    load_all()
    services = Services(
        settings=Settings(matrix=matrix),
        registry=registry,
        outbox=Outbox(db, clock=clock),
        audit=audit,
        templates=Templates(),
        metrics=Metrics(),
        clock=clock,
        version="test",
        authorizer=Authorizer(),
        extensions=Extensions(),
    )
    router = Router(matrix, connection, Dispatcher(services), handled, audit, Metrics(), 0.0, clock)
    router.allowed_rooms.add(ROOM)
    made = Harness(db, router, handled)
    router.reaction_handlers.append(made.on_reaction)
    try:
        yield made
    finally:
        await router.supervisor.drain(2.0)
        await connection.close()
        await db.close()


async def test_a_standby_holds_commands_and_reactions_and_acts_on_them_only_once_leading(
    harness: Harness,
) -> None:
    """Standing by, nothing is audited or handled; leading, an unclaimed command is audited, not run."""
    room: Any = MatrixRoom(ROOM, BOT)
    router = harness.router
    router.stand_by()
    await router._on_text(room, text("$gap", "!ping", LED_AT - 3))
    await router._on_text(room, text("$answered", "!ping", LED_AT - 30))
    await router._on_reaction(room, reaction("$vote", "$prompt", LED_AT - 4))
    await router.supervisor.drain(2.0)
    assert await harness.audit() == []
    assert harness.reactions == []
    # The old leader had answered one of the commands (claimed it) before it died.
    assert await harness.handled.claim("$answered")

    await router.take_lead(LED_AT)
    await router.supervisor.drain(2.0)
    assert await harness.audit() == [("$gap", "command:skipped", "sent-before-start")]
    assert harness.reactions == ["$vote"]
    # Held events are handed on once: taking the lead again hands on nothing more.
    await router.take_lead(LED_AT)
    await router.supervisor.drain(2.0)
    assert harness.reactions == ["$vote"]


async def test_without_standing_by_the_router_acts_at_once(harness: Harness) -> None:
    """One replica (no ha): a reaction reaches its handler as it arrives."""
    await harness.router._on_reaction(MatrixRoom(ROOM, BOT), reaction("$now", "$prompt", LED_AT))
    await harness.router.supervisor.drain(2.0)
    assert harness.reactions == ["$now"]
