"""The outbox's marker against the real Synapse: clear txn beside the ciphertext, a reaction never twice."""

from __future__ import annotations

from bot.matrix.transport import NioTransport
from bot.outbox.events import OUTBOX_KEY, with_marker
from tests.integration.botrunner import RunningBot, eventually
from tests.integration.fixtures import ServeAlice
from tests.integration.people import event_id_is


async def transport_in(runner: RunningBot, room: str) -> NioTransport:
    """The bot's own transport, once the bot's client knows the room (its sync has seen the join)."""
    assert runner.bot is not None
    client = runner.bot.connection.client
    await eventually(lambda: room in client.rooms, "the bot's client to know the room")
    return NioTransport(runner.bot.connection)


async def test_encrypted_event_keeps_the_marker_inside_and_only_the_txn_in_clear(
    serve_alice: ServeAlice,
) -> None:
    """The homeserver sees ciphertext plus the txn id; Alice decrypts the full marker; /messages finds it."""
    alice, room, runner = await serve_alice()
    transport = await transport_in(runner, room)
    content = with_marker({"msgtype": "m.notice", "body": "marked"}, origin="o1", outbox_id=41, txn_id="t-41")
    event_id = await transport.send_event(room, "m.room.message", content, "t-41")

    events, _ = await transport.own_events(room, None, 20)
    raw = next(e for e in events if e.get("event_id") == event_id)
    assert raw["type"] == "m.room.encrypted"
    assert raw["content"][OUTBOX_KEY] == {"txn": "t-41"}
    assert "body" not in raw["content"] and "ciphertext" in raw["content"]
    seen = await alice.wait_for(event_id_is(event_id), room_id=room)
    assert seen.source["content"][OUTBOX_KEY] == {"origin": "o1", "id": 41, "txn": "t-41"}


async def test_a_reaction_sent_again_under_another_txn_id_answers_the_first_event(
    serve_alice: ServeAlice,
) -> None:
    """Synapse refuses a second equal reaction (M_DUPLICATE_ANNOTATION); the transport answers the first."""
    alice, room, runner = await serve_alice()
    transport = await transport_in(runner, room)
    target = await alice.send_text(room, "react to me")
    relates = {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "✅"}}
    first = await transport.send_event(
        room, "m.reaction", with_marker(relates, origin="o", outbox_id=1, txn_id="a"), "a"
    )
    # What a new device resending the same row does: same content, another transaction-id space.
    again = await transport.send_event(
        room, "m.reaction", with_marker(relates, origin="o", outbox_id=1, txn_id="a"), "b"
    )
    assert again == first
